package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"tend.dev/tend/internal/cli"
	"tend.dev/tend/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func runStdin(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.MainIO(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

const cluster = `apiVersion: tend.dev/v1alpha1
kind: Cluster
metadata: {name: cli}
spec:
  components:
  - {name: ns, path: ns}
  - {name: web, path: web, namespace: cli-web, dependsOn: [ns]}
`

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{"c.yaml": cluster, "ns/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: cli-web}\n",
		"web/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"})
	code, out, stderr := run(t, "validate", "--repo", dir)
	if code != 0 || !strings.Contains(out, "Cluster cli (c.yaml:1): 2 components, 2 objects") {
		t.Fatalf("validate = %d\n%s%s", code, out, stderr)
	}
	testenv.WriteFiles(t, dir, map[string]string{"web/bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  - y\n"})
	code, _, stderr = run(t, "validate", "--repo", dir)
	if code != 2 || !strings.Contains(stderr, "error: web/bad.yaml:") || !strings.Contains(stderr, "hint:") {
		t.Fatalf("validate of a broken file = %d\n%s", code, stderr)
	}
	code, out, _ = run(t, "validate", "--repo", dir, "-o", "json")
	var res struct {
		Valid    bool
		Problems []struct {
			Origin struct{ File string }
			Hint   string
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 2 || res.Valid || len(res.Problems) != 1 || res.Problems[0].Origin.File != "web/bad.yaml" {
		t.Fatalf("validate -o json = %d %v\n%s", code, err, out)
	}
	code, _, stderr = run(t, "build", "--repo", dir)
	if code != 2 || !strings.Contains(stderr, "--cluster is required") || !strings.Contains(stderr, "hint:") {
		t.Fatalf("build without --cluster = %d %s", code, stderr)
	}
	code, _, stderr = run(t, "build", "--repo", dir, "--cluster", "nope")
	if code != 2 || !strings.Contains(stderr, `no Cluster named "nope"`) {
		t.Fatalf("build --cluster nope = %d %s", code, stderr)
	}
}

func TestDiffApplyStatus(t *testing.T) {
	cp := testenv.ControlPlane(t)
	kc := cp.Kubeconfig
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{"c.yaml": cluster, "ns/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: cli-web}\n",
		"web/cm.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: v1}\n",
		"web/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2}\n"})
	base := []string{"--repo", dir, "--cluster", "cli", "--kubeconfig", kc}

	code, out, stderr := run(t, append([]string{"diff"}, base...)...)
	if code != 1 || !strings.Contains(out, "created ConfigMap/cli-web/cm") || !strings.Contains(out, "created Namespace/cli-web") {
		t.Fatalf("diff before apply = %d\n%s%s", code, out, stderr)
	}
	if strings.Contains(out, "hunter2") || !strings.Contains(out, "<redacted: sha256:") {
		t.Fatalf("diff shows a secret value:\n%s", out)
	}
	code, out, stderr = run(t, append([]string{"apply"}, base...)...)
	if code != 0 || !strings.Contains(out, "✓ web") || !strings.Contains(out, "2 components, 2 Ready") {
		t.Fatalf("apply = %d\n%s%s", code, out, stderr)
	}
	code, out, _ = run(t, append([]string{"diff"}, base...)...)
	if code != 0 || !strings.Contains(out, "no changes") {
		t.Fatalf("diff after apply = %d\n%s", code, out)
	}
	testenv.WriteFiles(t, dir, map[string]string{"web/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: v2}\n",
		"web/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter3}\n"})
	code, out, _ = run(t, append([]string{"diff", "-o", "json"}, base...)...)
	var d struct {
		Changed bool
		Objects []struct{ Object, Action, Diff string }
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil || code != 1 || !d.Changed || len(d.Objects) != 2 {
		t.Fatalf("diff -o json = %d %v\n%s", code, err, out)
	}
	if !strings.Contains(out, `-  k: v1`) || !strings.Contains(out, `+  k: v2`) || strings.Contains(out, "hunter") {
		t.Fatalf("diff content wrong or leaks:\n%s", out)
	}
	code, out, _ = run(t, "status", "--cluster", "cli", "--kubeconfig", kc)
	if code != 0 || !strings.Contains(out, "COMPONENT") || !strings.Contains(out, "web") || !strings.Contains(out, "True") {
		t.Fatalf("status = %d\n%s", code, out)
	}
	// A broken component: status exits 1, apply exits 2.
	testenv.WriteFiles(t, dir, map[string]string{"web/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: [nested]}\n"})
	code, out, _ = run(t, append([]string{"apply"}, base...)...)
	if code != 2 || !strings.Contains(out, "✗ web") || !strings.Contains(out, "hint:") {
		t.Fatalf("failing apply = %d\n%s", code, out)
	}
	code, out, _ = run(t, "status", "--cluster", "cli", "--kubeconfig", kc, "-o", "json")
	if code != 1 || !strings.Contains(out, `"ready": "False"`) || strings.Contains(out, "hunter") {
		t.Fatalf("status -o json = %d\n%s", code, out)
	}
	code, _, stderr = run(t, "diff", "--repo", dir, "--cluster", "cli", "--kubeconfig", filepath.Join(t.TempDir(), "missing"))
	if code != 2 || !strings.Contains(stderr, "hint:") {
		t.Fatalf("diff with a bad kubeconfig = %d\n%s", code, stderr)
	}
}

func TestDevUpDown(t *testing.T) {
	dir := t.TempDir()
	code, out, stderr := run(t, "dev", "up", "--dir", dir)
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "admin.kubeconfig") {
		t.Fatalf("dev up = %d\n%s%s", code, out, stderr)
	}
	kc := strings.TrimSpace(out)
	t.Cleanup(func() { run(t, "dev", "down", "--dir", dir) })
	code, out, _ = run(t, "dev", "up", "--dir", dir)
	if code != 0 || strings.TrimSpace(out) != kc {
		t.Fatalf("second dev up = %d %q, want the same kubeconfig", code, out)
	}
	code, out, stderr = run(t, "status", "--kubeconfig", kc)
	if code != 0 || !strings.Contains(out, "no components") {
		t.Fatalf("status on a new dev cluster = %d\n%s%s", code, out, stderr)
	}
	code, _, stderr = run(t, "dev", "down", "--dir", dir)
	if code != 0 || !strings.Contains(stderr, "stopped") {
		t.Fatalf("dev down = %d %s", code, stderr)
	}
}
