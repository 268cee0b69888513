package render

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/registry"
	repo "helm.sh/helm/v4/pkg/repo/v1"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/testenv"
)

// writeChart writes a small chart written for these tests.
func writeChart(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: web\nversion: 1.2.0\n",
		"values.yaml": "replicas: 1\ngreeting: hello\n",
		"crds/gadget.yaml": `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.test}
spec:
  group: example.test
  scope: Namespaced
  names: {kind: Gadget, plural: gadgets}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
`,
		"templates/_helpers.tpl": `{{- define "web.name" -}}{{ .Release.Name }}-web{{- end -}}`,
		"templates/cm.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"web.name\" . }}\ndata:\n  greeting: {{ .Values.greeting | quote }}\n  replicas: {{ .Values.replicas | quote }}\n{{- if .Values.required }}\n  must: {{ required \"values.must is required\" .Values.must }}\n{{- end }}\n",
		"templates/tests/t.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\nspec: {containers: [{name: t, image: busybox}]}\n",
		"templates/NOTES.txt":    "thanks",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(c), 0o644)
	}
}

func TestHelmLocalChart(t *testing.T) {
	root := t.TempDir()
	writeChart(t, filepath.Join(root, "charts/web"))
	os.WriteFile(filepath.Join(root, "values.yaml"), []byte("greeting: hi from ${cluster_name}\n"), 0o644)
	c := model.Component{Name: "web", Namespace: "apps", Helm: &model.HelmChart{Chart: "charts/web", Values: []string{"values.yaml"}}}
	objs, err := Component(root, c, map[string]string{"cluster_name": "dev"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind()+"/"+o.GetName()+"@"+o.Origin.File)
	}
	want := "CustomResourceDefinition/gadgets.example.test@charts/web/crds/gadget.yaml ConfigMap/web-web@charts/web/templates/cm.yaml"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("objects = %v\nwant %s (test hooks and NOTES skipped, CRDs included)", kinds, want)
	}
	data := objs[1].Object["data"].(map[string]any)
	if data["greeting"] != "hi from dev" || data["replicas"] != "1" {
		t.Errorf("values not merged and substituted: %v", data)
	}

	os.WriteFile(filepath.Join(root, "bad.yaml"), []byte("required: true\n"), 0o644)
	c.Helm.Values = []string{"bad.yaml"}
	_, err = Component(root, c, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml") || !strings.Contains(err.Error(), "values.must is required") || model.HintOf(err) == "" {
		t.Fatalf("a chart that fails to render: %v (hint %q)", err, model.HintOf(err))
	}
}

func TestHelmRemoteCharts(t *testing.T) {
	dir := t.TempDir()
	writeChart(t, filepath.Join(dir, "web"))
	ch, err := loader.Load(filepath.Join(dir, "web"))
	if err != nil {
		t.Fatal(err)
	}
	tgz, err := chartutil.Save(ch, dir)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(tgz)

	t.Run("oci", func(t *testing.T) {
		reg := testenv.NewRegistry(t, "", "")
		client, err := registry.NewClient(registry.ClientOptPlainHTTP())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Push(data, reg.Host+"/charts/web:1.2.0"); err != nil {
			t.Fatal(err)
		}
		charts := &Charts{PlainHTTP: true}
		old := DefaultCharts
		DefaultCharts = charts
		defer func() { DefaultCharts = old }()
		objs, err := Component(t.TempDir(), model.Component{Name: "o", Helm: &model.HelmChart{Chart: "oci://" + reg.Host + "/charts/web", Version: "1.2.0"}}, nil, nil)
		if err != nil || len(objs) != 2 {
			t.Fatalf("oci chart: %d objects, %v", len(objs), err)
		}
	})
	t.Run("http repository", func(t *testing.T) {
		idx := repo.NewIndexFile()
		if err := idx.MustAdd(ch.Metadata, "web-1.2.0.tgz", "", "sha256:0"); err != nil {
			t.Fatal(err)
		}
		idxFile := filepath.Join(dir, "index.yaml")
		if err := idx.WriteFile(idxFile, 0o644); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
		defer srv.Close()
		objs, err := Component(t.TempDir(), model.Component{Name: "h", Helm: &model.HelmChart{Chart: "web", Repo: srv.URL, Version: "1.2.0"}}, nil, nil)
		if err != nil || len(objs) != 2 {
			t.Fatalf("http chart: %d objects, %v", len(objs), err)
		}
		_, err = Component(t.TempDir(), model.Component{Name: "h", Helm: &model.HelmChart{Chart: "web", Repo: srv.URL, Version: "9.9.9"}}, nil, nil)
		if err == nil || !strings.Contains(model.HintOf(err), "available: 1.2.0") {
			t.Fatalf("missing version: %v (hint %q)", err, model.HintOf(err))
		}
	})
	t.Run("unreachable chart repository", func(t *testing.T) {
		_, err := Component(t.TempDir(), model.Component{Name: "u", Helm: &model.HelmChart{Chart: "web", Repo: "http://127.0.0.1:1", Version: "1.2.0"}}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "unreachable") || model.HintOf(err) == "" {
			t.Fatalf("err = %v, hint %q", err, model.HintOf(err))
		}
	})
}
