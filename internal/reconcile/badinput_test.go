package reconcile_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
	"tend.dev/tend/internal/testenv"
)

// TestBadInput: each broken component is not Ready with a reason, a message
// naming the file or object and a hint, while the others reconcile.
func TestBadInput(t *testing.T) {
	c, _ := client(t)
	ctx := context.Background()
	// Another field manager owns data.owner of this ConfigMap already.
	if _, err := c.Typed.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bad"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	other := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"shared","namespace":"bad"},"data":{"owner":"someone-else"}}`)
	force := true
	if _, err := c.Typed.CoreV1().ConfigMaps("bad").Patch(ctx, "shared", types.ApplyPatchType, other, metav1.PatchOptions{FieldManager: "other-tool", Force: &force}); err != nil {
		t.Fatal(err)
	}
	cm := func(name, extra string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {a: b}\n" + extra
	}
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{
		"c.yaml": `apiVersion: tend.dev/v1alpha1
kind: Cluster
metadata: {name: bad}
spec:
  components:
  - {name: good, path: good, namespace: bad}
  - {name: yaml, path: yaml, namespace: bad}
  - {name: kustomize, path: kustomize, namespace: bad}
  - {name: nocrd, path: nocrd, namespace: bad}
  - {name: rejected, path: rejected, namespace: bad}
  - {name: unknownfield, path: unknownfield, namespace: bad}
  - {name: conflict, path: conflict, namespace: bad}
  - {name: forced, path: forced, namespace: bad, force: true}
  - {name: dependent, path: good2, namespace: bad, dependsOn: [rejected]}
  - {name: novar, path: novar, namespace: bad}
`,
		"good/cm.yaml":                 cm("good", ""),
		"good2/cm.yaml":                cm("good2", ""),
		"yaml/cm.yaml":                 "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: [\n",
		"kustomize/kustomization.yaml": "resources: [missing.yaml]\n",
		"nocrd/w.yaml":                 "apiVersion: nothere.example.test/v1\nkind: Gadget\nmetadata: {name: g}\n",
		"rejected/d.yaml":              "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: -1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}\n",
		"unknownfield/cm.yaml":         cm("uf", "spec: {replicas: 2}\n"),
		"conflict/cm.yaml":             "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {owner: tend}\n",
		"forced/cm.yaml":               "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared2}\ndata: {owner: tend}\n",
		"novar/cm.yaml":                cm("nv", "  extra: ${undefined_var}\n"),
	})
	if _, err := c.Typed.CoreV1().ConfigMaps("bad").Patch(ctx, "shared2", types.ApplyPatchType,
		[]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"shared2","namespace":"bad"},"data":{"owner":"someone-else"}}`),
		metav1.PatchOptions{FieldManager: "other-tool", Force: &force}); err != nil {
		t.Fatal(err)
	}
	res := once(t, c, dir, "bad")
	mustReady(t, res, "good", "forced")
	tests := []struct {
		comp, reason, msg, hint string
	}{
		{"yaml", reconcile.ReasonRenderFailed, "yaml/cm.yaml:4: invalid YAML", "YAML syntax"},
		{"kustomize", reconcile.ReasonRenderFailed, "kustomize/kustomization.yaml: kustomize build", "kustomization lists"},
		{"nocrd", reconcile.ReasonApplyFailed, "nocrd/w.yaml:1", "CustomResourceDefinition"},
		{"rejected", reconcile.ReasonApplyFailed, "Deployment/bad/d (rejected/d.yaml:1)", "fix the manifest"},
		{"unknownfield", reconcile.ReasonApplyFailed, `.spec: field not declared in schema`, "fix the manifest"},
		{"conflict", reconcile.ReasonApplyFailed, `field manager conflict: conflict with "other-tool"`, "force: true"},
		{"dependent", reconcile.ReasonDependencyNotReady, "waiting for rejected", ""},
		{"novar", reconcile.ReasonRenderFailed, "novar/cm.yaml:5: variable ${undefined_var} has no value", "substitutions"},
	}
	for _, tc := range tests {
		t.Run(tc.comp, func(t *testing.T) {
			r := res[tc.comp]
			if r.Ready || r.Reason != tc.reason {
				t.Fatalf("%s: ready=%v reason=%s, want not Ready with %s (%s)", tc.comp, r.Ready, r.Reason, tc.reason, r.Message)
			}
			if !strings.Contains(r.Message, tc.msg) {
				t.Errorf("message = %q, want it to contain %q", r.Message, tc.msg)
			}
			if !strings.Contains(r.Hint, tc.hint) {
				t.Errorf("hint = %q, want it to contain %q", r.Hint, tc.hint)
			}
			comp, ok, err := c.GetComponent(ctx, tc.comp)
			if err != nil || !ok {
				t.Fatalf("Component %s: %v", tc.comp, err)
			}
			if cond := comp.Status.Ready(); cond == nil || cond.Status != "False" || cond.Reason != tc.reason {
				t.Errorf("status condition = %+v", cond)
			}
		})
	}
	if cm, _ := c.Typed.CoreV1().ConfigMaps("bad").Get(ctx, "shared", metav1.GetOptions{}); cm.Data["owner"] != "someone-else" {
		t.Errorf("a conflicting apply changed the object: %v", cm.Data)
	}
	if cm, _ := c.Typed.CoreV1().ConfigMaps("bad").Get(ctx, "shared2", metav1.GetOptions{}); cm.Data["owner"] != "tend" {
		t.Errorf("force did not take over the field: %v", cm.Data)
	}
}

// TestFailureKeepsInventory: when a later change breaks a component, the
// objects already applied are not pruned and no later stage is applied.
func TestFailureKeepsInventory(t *testing.T) {
	c, _ := client(t)
	ctx := context.Background()
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{
		"c.yaml":     "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: keep}\nspec:\n  components:\n  - {name: k, path: k, namespace: keep}\n",
		"k/ns.yaml":  "apiVersion: v1\nkind: Namespace\nmetadata: {name: keep}\n",
		"k/old.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: old}\ndata: {a: b}\n",
	})
	mustReady(t, once(t, c, dir, "keep"), "k")
	// Remove old.yaml, and break the component: a bad namespace in stage 0
	// and a valid ConfigMap in stage 1.
	os.Remove(filepath.Join(dir, "k/old.yaml"))
	testenv.WriteFiles(t, dir, map[string]string{
		"k/ns2.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: Not_Valid}\n",
		"k/new.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new}\ndata: {a: b}\n",
	})
	res := once(t, c, dir, "keep")
	if res["k"].Ready {
		t.Fatal("broken component is Ready")
	}
	if _, err := c.Typed.CoreV1().ConfigMaps("keep").Get(ctx, "old", metav1.GetOptions{}); err != nil {
		t.Errorf("object pruned although the component failed: %v", err)
	}
	if _, err := c.Typed.CoreV1().ConfigMaps("keep").Get(ctx, "new", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("stage 1 applied although stage 0 failed: %v", err)
	}
	comp, _, _ := c.GetComponent(ctx, "k")
	found := false
	for _, e := range comp.Status.Inventory {
		if strings.Contains(e.ID, "_old_") {
			found = true
		}
	}
	if !found {
		t.Errorf("inventory lost the object it still owns: %+v", comp.Status.Inventory)
	}
}

func TestLoadErrors(t *testing.T) {
	c, _ := client(t)
	tests := []struct {
		name, file, want, hint string
	}{
		{"cycle", "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: cyc}\nspec:\n  components:\n  - {name: a, path: a, dependsOn: [b]}\n  - {name: b, path: a, dependsOn: [a]}\n",
			"dependency cycle: a → b → a", "remove one"},
		{"unknown field", "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: cyc}\nspec:\n  components:\n  - name: a\n    path: a\n    dependson: [b]\n",
			`c.yaml:8: unknown field "dependson" in spec.components[0]`, `did you mean "dependsOn"`},
		{"unknown kind", "apiVersion: tend.dev/v1alpha1\nkind: Clustr\nmetadata: {name: cyc}\n", `c.yaml:1: unknown kind "Clustr"`, "kinds are: Cluster"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			testenv.WriteFiles(t, dir, map[string]string{"c.yaml": tc.file, "a/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"})
			src, _ := source.NewDir(dir)
			_, _, err := reconcile.New(reconcile.Options{Source: src, Cluster: "cyc", Kube: c}).Once(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if h := model.HintOf(err); !strings.Contains(h, tc.hint) && !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("hint = %q, want %q", h, tc.hint)
			}
		})
	}
}

func TestUnreachableCluster(t *testing.T) {
	cp := testenv.ControlPlane(t)
	cfg := *cp.Config
	cfg.Host = "https://127.0.0.1:1"
	cfg.Timeout = 2 * time.Second
	c, err := kube.NewClient(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Ping(context.Background())
	if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(model.HintOf(err), "--kubeconfig") {
		t.Fatalf("err = %v (hint %q)", err, model.HintOf(err))
	}
}
