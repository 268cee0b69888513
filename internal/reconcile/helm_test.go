package reconcile_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
	"tend.dev/tend/internal/testenv"
)

// TestHelmComponent: a chart is rendered in-process and applied through the
// same engine: its CRD first, no Helm release Secret, and its objects are
// drift-corrected like any other.
func TestHelmComponent(t *testing.T) {
	c, _ := client(t)
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{
		"c.yaml": `apiVersion: tend.dev/v1alpha1
kind: Cluster
metadata: {name: helm}
spec:
  interval: 1s
  components:
  - {name: helm-ns, path: ns}
  - name: web
    namespace: helmapps
    dependsOn: [helm-ns]
    helm: {chart: charts/web, values: [values/web.yaml]}
`,
		"ns/ns.yaml":                   "apiVersion: v1\nkind: Namespace\nmetadata: {name: helmapps}\n",
		"values/web.yaml":              "greeting: hello ${cluster_name}\n",
		"charts/web/Chart.yaml":        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
		"charts/web/values.yaml":       "greeting: default\n",
		"charts/web/crds/crd.yaml":     crd,
		"charts/web/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-cfg}\ndata: {greeting: {{ .Values.greeting | quote }}}\n",
		"charts/web/templates/w.yaml":  "apiVersion: example.test/v1\nkind: Widget\nmetadata: {name: {{ .Release.Name }}-w}\nspec: {size: 1}\n",
	})
	src, _ := source.NewDir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reconcile.New(reconcile.Options{Source: src, Cluster: "helm", Kube: c}).Run(ctx)
	cms := c.Typed.CoreV1().ConfigMaps("helmapps")
	testenv.Eventually(t, 60*time.Second, "chart applied", func() bool {
		cm, err := cms.Get(ctx, "web-cfg", metav1.GetOptions{})
		return err == nil && cm.Data["greeting"] == "hello helm"
	})
	secrets, _ := c.Typed.CoreV1().Secrets("helmapps").List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
	if len(secrets.Items) != 0 {
		t.Errorf("a Helm release Secret exists: tend must not create releases")
	}
	if _, err := cms.Patch(ctx, "web-cfg", types.MergePatchType, []byte(`{"data":{"greeting":"by hand"}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "drift on a chart's object corrected", func() bool {
		cm, err := cms.Get(ctx, "web-cfg", metav1.GetOptions{})
		return err == nil && cm.Data["greeting"] == "hello helm"
	})
}
