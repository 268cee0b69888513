package render

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"tend.dev/tend/internal/model"
)

func TestSubstitute(t *testing.T) {
	vars := map[string]string{"domain": "example.test", "n": "3"}
	tests := []struct {
		name, in, want, err string
	}{
		{"plain", "host: app.${domain}\n", "host: app.example.test\n", ""},
		{"default", "replicas: ${replicas:=2}\n", "replicas: 2\n", ""},
		{"set wins over default", "n: ${n:=9}\n", "n: 3\n", ""},
		{"escape", "x: $${domain}\n", "x: ${domain}\n", ""},
		{"shell-like untouched", "x: $domain and $(cmd)\n", "x: $domain and $(cmd)\n", ""},
		{"missing", "a: 1\nb: ${nope}\n", "", "f.yaml:2: variable ${nope} has no value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := Substitute("f.yaml", []byte(tc.in), vars)
			if tc.err != "" {
				if len(errs) == 0 || !strings.Contains(errs.Error(), tc.err) {
					t.Fatalf("errs = %v, want %q", errs, tc.err)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Error(diff)
			}
		})
	}
}

func TestComponent(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"plain/a.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {c: ${cluster_name}}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n",
		"plain/sub/c.json":        `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}`,
		"plain/README.md":         "not yaml",
		"kust/kustomization.yaml": "namePrefix: p-\nresources: [cm.yaml]\n",
		"kust/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k}\ndata: {d: \"${domain}\"}\n",
		"dup/a.yaml":              "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
		"noname/a.yaml":           "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
	}
	for p, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644)
	}
	vars := map[string]string{"cluster_name": "dev", "domain": "example.test"}
	names := func(objs []Object) (out []string) {
		for _, o := range objs {
			out = append(out, o.GetName()+"@"+o.Origin.String())
		}
		return out
	}
	objs, err := Component(dir, model.Component{Name: "p", Path: "plain"}, vars, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a@plain/a.yaml:1", "b@plain/a.yaml:7", "c@plain/sub/c.json:1"}, names(objs)); diff != "" {
		t.Error(diff)
	}
	if v, _, _ := unstructuredString(objs[0].Object, "data", "c"); v != "dev" {
		t.Errorf("substitution: %q", v)
	}
	objs, err = Component(dir, model.Component{Name: "k", Path: "kust"}, vars, nil)
	if err != nil {
		t.Fatal(err)
	}
	if objs[0].GetName() != "p-k" || objs[0].Origin.File != "kust/kustomization.yaml" {
		t.Errorf("kustomize: %v", names(objs))
	}
	if _, err := Component(dir, model.Component{Name: "d", Path: "dup"}, vars, nil); err == nil || !strings.Contains(err.Error(), "dup/a.yaml:5: ConfigMap/a: defined twice") {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := Component(dir, model.Component{Name: "n", Path: "noname"}, vars, nil); err == nil || !strings.Contains(err.Error(), "metadata.name is missing") {
		t.Errorf("no name: %v", err)
	}
	if _, err := Component(dir, model.Component{Name: "m", Path: "missing"}, vars, nil); err == nil || model.HintOf(err) == "" {
		t.Errorf("missing dir: %v", err)
	}
}

func unstructuredString(m map[string]any, path ...string) (string, bool, error) {
	cur := any(m)
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = mm[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}
