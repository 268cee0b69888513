package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSchemaUpToDate fails when the Go types changed and the committed
// schema was not regenerated (go generate ./internal/model).
func TestSchemaUpToDate(t *testing.T) {
	got, err := Schema(".")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../schema/tend.dev_v1alpha1.json")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)+"\n"); diff != "" {
		t.Fatalf("schema is stale; run go generate ./internal/model (-committed +generated):\n%s", diff)
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the errors, in order
	}{
		{"valid, shared components", map[string]string{
			"a.yaml": "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec:\n  interval: 30s\n  components: [{name: web, path: web}]\n",
			"b.yaml": "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: b}\nspec:\n  components: [{name: web, path: web}]\n---\napiVersion: v1\nkind: ConfigMap\n",
		}, nil},
		{"bad duration", map[string]string{"a.yaml": "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec:\n  interval: soon\n  components: []\n"},
			[]string{`a.yaml:5: "soon" is not a duration`}},
		{"unknown apiVersion", map[string]string{"a.yaml": "apiVersion: tend.dev/v9\nkind: Cluster\n"}, []string{"a.yaml:1: apiVersion tend.dev/v9 is not known"}},
		{"invalid yaml in a tend file", map[string]string{"a.yaml": "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a\n"}, []string{"a.yaml:2: invalid YAML"}},
		{"broken non-tend yaml is ignored", map[string]string{"chart/t.yaml": "{{ .Values }}: [\n"}, nil},
		{"duplicate cluster", map[string]string{
			"a.yaml": "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec: {components: []}\n",
			"b.yaml": "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec: {components: []}\n"}, []string{"b.yaml:1: Cluster/a: defined twice; also at a.yaml:1"}},
		{"bad references", map[string]string{"a.yaml": "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec:\n  components:\n  - {name: x, path: ../out, dependsOn: [ghost]}\n  - {name: x, path: p}\n"},
			[]string{`path "../out" leaves the repository`, `component "x" is listed twice`, `depends on "ghost"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for p, c := range tc.files {
				os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
				os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644)
			}
			r, err := Load(dir)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded (%d clusters), want errors %q", len(r.Clusters), tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("errors %q do not contain %q", err, w)
				}
			}
			if HintOf(err) == "" {
				t.Errorf("no hint in %v", err)
			}
		})
	}
}

func TestOrderAndCycle(t *testing.T) {
	comps := []Component{{Name: "app", DependsOn: []string{"db", "crds"}}, {Name: "db", DependsOn: []string{"crds"}}, {Name: "crds"}}
	if diff := cmp.Diff([]string{"crds", "db", "app"}, Order(comps)); diff != "" {
		t.Error(diff)
	}
	if c := FindCycle(comps); c != nil {
		t.Errorf("cycle %v in an acyclic graph", c)
	}
	comps[2].DependsOn = []string{"app"}
	if c := FindCycle(comps); len(c) != 4 {
		t.Errorf("FindCycle = %v", c)
	}
}
