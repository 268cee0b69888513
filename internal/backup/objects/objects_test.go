package objects_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"tend.dev/tend/internal/backup/objects"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/render"
	"tend.dev/tend/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func client(t *testing.T) (*kube.Client, *kube.Applier) {
	t.Helper()
	c, err := kube.NewClient(testenv.ControlPlane(t).Config)
	if err != nil {
		t.Fatal(err)
	}
	return c, &kube.Applier{C: c, Live: kube.Direct{C: c}}
}

func decode(t *testing.T, docs string) []render.Object {
	t.Helper()
	objs, err := render.Decode("test.yaml", []byte(docs))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func apply(t *testing.T, ctx context.Context, a *kube.Applier, component string, wait bool, docs string) {
	t.Helper()
	if _, err := a.Apply(ctx, kube.Request{Cluster: "prod", Component: component, Wait: wait, Timeout: time.Minute, Objects: decode(t, docs)}); err != nil {
		t.Fatalf("apply %s: %v", component, err)
	}
}

const gadgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.backup.test}
spec:
  group: backup.test
  scope: Namespaced
  names: {kind: Gadget, plural: gadgets, singular: gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// shopApp is what tend's "shop" component applies from git.
const shopApp = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "example.test/web:1"}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {color: blue}
---
apiVersion: backup.test/v1
kind: Gadget
metadata: {name: g1, namespace: shop}
spec: {size: 3}
`

var secretData = map[string][]byte{"bin": {0, 1, 2, 0xfe, 0xff, '\n'}, "password": []byte("s3cr3t\n")}

// setup makes namespace shop: what tend's components applied (with tend's
// labels), what someone made by hand (without), what the selector
// excludes, and what the cluster makes itself.
func setup(t *testing.T, ctx context.Context, c *kube.Client, a *kube.Applier) {
	t.Helper()
	apply(t, ctx, a, "crds", false, gadgetCRD)
	apply(t, ctx, a, "namespaces", false, "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: web}}\n")
	apply(t, ctx, a, "shop", true, shopApp)

	core := c.Typed.CoreV1()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	meta := func(name string, labels map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels}
	}
	must(core.ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta("robot", nil)}, metav1.CreateOptions{}))
	must(core.Secrets("shop").Create(ctx, &corev1.Secret{ObjectMeta: meta("creds", map[string]string{"app": "web"}), Data: secretData}, metav1.CreateOptions{}))
	must(c.Typed.RbacV1().Roles("shop").Create(ctx, &rbacv1.Role{ObjectMeta: meta("robot", nil),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}))
	must(c.Typed.RbacV1().RoleBindings("shop").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta("robot", nil),
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "robot"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "robot", Namespace: "shop"}}}, metav1.CreateOptions{}))
	// Excluded by the selector.
	must(core.ConfigMaps("shop").Create(ctx, &corev1.ConfigMap{ObjectMeta: meta("cache", map[string]string{"tier": "cache"})}, metav1.CreateOptions{}))
	// Made by or for the cluster: never exported.
	must(core.Secrets("shop").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "robot-token", Namespace: "shop",
		Annotations: map[string]string{corev1.ServiceAccountNameKey: "robot"}}, Type: corev1.SecretTypeServiceAccountToken}, metav1.CreateOptions{}))
	must(core.Events("shop").Create(ctx, &corev1.Event{ObjectMeta: meta("web.1", nil), Reason: "Test", Message: "hello",
		InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", Namespace: "shop", Name: "settings"}}, metav1.CreateOptions{}))
	holder := "someone"
	must(c.Typed.CoordinationV1().Leases("shop").Create(ctx, &coordinationv1.Lease{ObjectMeta: meta("lock", nil),
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{}))
	testenv.Eventually(t, time.Minute, "the token controller fills robot-token", func() bool {
		s, err := core.Secrets("shop").Get(ctx, "robot-token", metav1.GetOptions{})
		return err == nil && len(s.Data["token"]) > 0
	})
}

// live reads the object o names, in namespace ns when set.
func live(t *testing.T, ctx context.Context, c *kube.Client, o render.Object, ns string) (*unstructured.Unstructured, error) {
	t.Helper()
	m, err := c.Mapping(o.GroupVersionKind())
	if err != nil {
		t.Fatal(err)
	}
	if ns == "" || o.GetKind() == "Namespace" {
		ns = o.GetNamespace()
	}
	return c.Resource(m, ns).Get(ctx, o.GetName(), metav1.GetOptions{})
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700 | fs.ModeDir
		} else {
			out = append(out, rel)
		}
		if info.Mode() != want {
			t.Errorf("%s has mode %v, want %v", rel, info.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tendApplies(u *unstructured.Unstructured) bool {
	for _, mf := range u.GetManagedFields() {
		if mf.Manager == kube.FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.Subresource == "" {
			return true
		}
	}
	return false
}

// mustCreate checks that a restore created n objects: the default
// ServiceAccount may be one the cluster made in the new namespace first,
// and then it is configured.
func mustCreate(t *testing.T, res *objects.RestoreResult, n int) {
	t.Helper()
	got := 0
	for _, c := range res.Changes {
		switch {
		case c.Action == kube.Created:
		case c.Action == kube.Configured && c.ID.GroupKind.Kind == "ServiceAccount" && c.ID.Name == "default":
		case c.Action == kube.Skipped && c.ID.GroupKind.Kind == "Namespace":
			continue
		default:
			t.Errorf("%s %s (%s)", c.Object, c.Action, c.Reason)
		}
		got++
	}
	if got != n {
		t.Errorf("restored %d objects, want %d: %+v", got, n, res.Changes)
	}
}

// nameOnly reports a manifest with nothing but its name: server-side
// apply records no fields for it, so it has no manager.
func nameOnly(o render.Object) bool {
	md, _ := o.Object["metadata"].(map[string]any)
	for k := range md {
		if k != "name" && k != "namespace" {
			return false
		}
	}
	return len(o.Object) == 3 // apiVersion, kind, metadata
}

func deleteNamespace(t *testing.T, ctx context.Context, c *kube.Client, ns string) {
	t.Helper()
	if err := c.Typed.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, "namespace "+ns+" is gone", func() bool {
		_, err := c.Typed.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// TestExportRestore backs up a namespace, deletes it, restores it, and
// restores it once more into another namespace.
func TestExportRestore(t *testing.T) {
	c, a := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	setup(t, ctx, c, a)

	dir := t.TempDir()
	res, err := objects.Export(ctx, c, []string{"shop"}, "tier!=cache", dir)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	want := []string{
		"shop/configmaps/settings.yaml",
		"shop/deployments.apps/web.yaml",
		"shop/gadgets.backup.test/g1.yaml",
		"shop/namespace.yaml",
		"shop/rolebindings.rbac.authorization.k8s.io/robot.yaml",
		"shop/roles.rbac.authorization.k8s.io/robot.yaml",
		"shop/secrets/creds.yaml",
		"shop/serviceaccounts/default.yaml",
		"shop/serviceaccounts/robot.yaml",
		"shop/services/web.yaml",
	}
	if diff := cmp.Diff(want, files(t, dir)); diff != "" {
		t.Fatalf("exported files (-want +got):\n%s", diff)
	}
	wantKinds := map[string]int{"ConfigMap": 1, "Deployment.apps": 1, "Gadget.backup.test": 1, "Namespace": 1, "Role.rbac.authorization.k8s.io": 1,
		"RoleBinding.rbac.authorization.k8s.io": 1, "Secret": 1, "Service": 1, "ServiceAccount": 2}
	// Skipped: the token, kube-root-ca.crt, the ReplicaSet and its pod.
	if diff := cmp.Diff(&objects.ExportResult{Objects: len(want), Kinds: wantKinds, Skipped: 4}, res); diff != "" {
		t.Errorf("ExportResult (-want +got):\n%s", diff)
	}
	svc, err := os.ReadFile(filepath.Join(dir, "shop/services/web.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"clusterIP", "status", "uid", "resourceVersion", "managedFields", "creationTimestamp"} {
		if bytes.Contains(svc, []byte(s+":")) {
			t.Errorf("services/web.yaml holds %s:\n%s", s, svc)
		}
	}

	t.Run("an export does not mix with an earlier one", func(t *testing.T) {
		if _, err := objects.Export(ctx, c, []string{"shop"}, "", dir); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("Export into a full directory = %v, want an error saying it is not empty", err)
		}
	})
	t.Run("a missing namespace is an error", func(t *testing.T) {
		if _, err := objects.Export(ctx, c, []string{"shop", "nowhere"}, "", t.TempDir()); err == nil || !strings.Contains(err.Error(), "nowhere") {
			t.Errorf("Export of a missing namespace = %v, want an error naming it", err)
		}
	})

	// What was backed up, as it was.
	manifests, err := objects.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]map[string]string{}
	for _, o := range manifests {
		u, err := live(t, ctx, c, o, "")
		if err != nil {
			t.Fatal(err)
		}
		labels[o.Origin.File] = u.GetLabels()
	}
	if l := labels["shop/configmaps/settings.yaml"]; l[kube.LabelComponent] != "shop" || l[kube.LabelCluster] != "prod" {
		t.Fatalf("settings labels = %v, want tend's", l)
	}

	deleteNamespace(t, ctx, c, "shop")

	rres, err := objects.Restore(ctx, a, dir, objects.RestoreOptions{Wait: true, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	mustCreate(t, rres, len(want))
	if got := rres.Changes[0].Object; got != "Namespace/shop" {
		t.Errorf("first change is %s, want Namespace/shop", got)
	}
	check := func(t *testing.T, ns string) {
		t.Helper()
		for _, o := range manifests {
			u, err := live(t, ctx, c, o, ns)
			if err != nil {
				t.Errorf("%s not restored: %v", o.ID(), err)
				continue
			}
			if !tendApplies(u) && !nameOnly(o) {
				t.Errorf("%s: tend does not apply it; managers %v", o.ID(), u.GetManagedFields())
			}
			if o.GetKind() == "Namespace" {
				continue
			}
			if diff := cmp.Diff(labels[o.Origin.File], u.GetLabels()); diff != "" {
				t.Errorf("%s labels (-backed up +restored):\n%s", o.ID(), diff)
			}
		}
		s, err := c.Typed.CoreV1().Secrets(ns).Get(ctx, "creds", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !maps.EqualFunc(secretData, s.Data, bytes.Equal) {
			t.Errorf("secret data = %q, want %q", s.Data, secretData)
		}
		d, err := c.Typed.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u, _ := live(t, ctx, c, manifests[slices.IndexFunc(manifests, func(o render.Object) bool { return o.GetKind() == "Deployment" })], ns)
		if r, err := status.Compute(u); err != nil || r.Status != status.CurrentStatus || d.Status.AvailableReplicas != 1 {
			t.Errorf("deployment web: %v %v, %d available", r, err, d.Status.AvailableReplicas)
		}
	}
	check(t, "shop")
	nsObj, _ := c.Typed.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if diff := cmp.Diff(labels["shop/namespace.yaml"], nsObj.Labels); diff != "" {
		t.Errorf("namespace labels (-backed up +restored):\n%s", diff)
	}

	t.Run("tend applies its components over a restore without conflicts", func(t *testing.T) {
		cs, err := a.Apply(ctx, kube.Request{Cluster: "prod", Component: "shop", Objects: decode(t, shopApp)})
		if err != nil {
			t.Fatalf("apply from git after restore: %v", err)
		}
		if got := cs.Count(kube.Failed); got != 0 {
			t.Errorf("%d failed: %+v", got, cs.Changes)
		}
	})

	t.Run("restoring over live objects configures them", func(t *testing.T) {
		res, err := objects.Restore(ctx, a, dir, objects.RestoreOptions{})
		if err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if got := res.Count(kube.Configured); got != len(want) {
			t.Errorf("configured %d, want %d: %+v", got, len(want), res.Changes)
		}
	})

	t.Run("into another namespace", func(t *testing.T) {
		res, err := objects.Restore(ctx, a, dir, objects.RestoreOptions{Namespace: "other", Wait: true, Timeout: 2 * time.Minute})
		if err != nil {
			t.Fatalf("Restore: %v", err)
		}
		mustCreate(t, res, len(want)) // Namespace/other, and all but Namespace/shop
		if res.Count(kube.Skipped) != 1 {
			t.Errorf("want Namespace/shop skipped: %+v", res.Changes)
		}
		check(t, "other")
		rb, err := c.Typed.RbacV1().RoleBindings("other").Get(ctx, "robot", metav1.GetOptions{})
		if err != nil || rb.Subjects[0].Namespace != "other" {
			t.Errorf("rolebinding robot in other: %+v, %v", rb, err)
		}
		ns, err := c.Typed.CoreV1().Namespaces().Get(ctx, "other", metav1.GetOptions{})
		if err != nil || ns.Labels[kube.LabelCluster] != "" {
			t.Errorf("namespace other: %v, labels %v: want it without tend's labels", err, ns.Labels)
		}
	})
}

// TestRestoreBadInput: a restore that cannot succeed reads everything first
// and applies nothing.
func TestRestoreBadInput(t *testing.T) {
	c, a := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := func(name string) map[string]string {
		return map[string]string{
			name + "/namespace.yaml":             "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + name + "}\n",
			name + "/configmaps/fine.yaml":       "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine, namespace: " + name + "}\ndata: {a: b}\n",
			name + "/configmaps/also-fine.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: also-fine, namespace: " + name + "}\n",
			name + "/notes.txt":                  "not a manifest, not read",
			name + "/serviceaccounts/robot.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: robot, namespace: " + name + "}\n",
		}
	}
	for _, tc := range []struct {
		name, ns, file, content string
		want                    []string // in the error
		object                  string   // named by a kube.ObjectError, when set
	}{
		{"invalid YAML", "bad1", "bad1/configmaps/broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken\ndata: [\n",
			[]string{"bad1/configmaps/broken.yaml", "invalid YAML"}, ""},
		{"not an object", "bad2", "bad2/configmaps/list.yaml", "- a\n- b\n",
			[]string{"bad2/configmaps/list.yaml"}, ""},
		{"unknown kind", "bad3", "bad3/gizmos.nothing.test/x.yaml", "apiVersion: nothing.test/v1\nkind: Gizmo\nmetadata: {name: x, namespace: bad3}\n",
			[]string{"Gizmo/bad3/x", "bad3/gizmos.nothing.test/x.yaml", "does not know kind Gizmo"}, "Gizmo/bad3/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := ns(tc.ns)
			files[tc.file] = tc.content
			testenv.WriteFiles(t, dir, files)
			_, err := objects.Restore(ctx, a, dir, objects.RestoreOptions{})
			if err == nil {
				t.Fatal("Restore succeeded")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
			if tc.object != "" {
				var oe *kube.ObjectError
				if !errors.As(err, &oe) || oe.Object != tc.object || oe.Origin.File != tc.file {
					t.Errorf("error = %#v, want a kube.ObjectError naming %s at %s", oe, tc.object, tc.file)
				}
			}
			if _, err := c.Typed.CoreV1().Namespaces().Get(ctx, tc.ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("namespace %s was created (%v): a bad restore must apply nothing", tc.ns, err)
			}
		})
	}

	t.Run("an empty directory", func(t *testing.T) {
		if _, err := objects.Restore(ctx, a, t.TempDir(), objects.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "no manifests") {
			t.Errorf("Restore of an empty directory = %v, want an error saying it holds no manifests", err)
		}
	})
}
