package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"tend.dev/tend/internal/testenv"
)

func keygen(t *testing.T) (file, recipient string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "age.agekey")
	code, out, stderr := run(t, "secret", "keygen", "--out", file)
	if code != 0 {
		t.Fatalf("keygen = %d %s", code, stderr)
	}
	st, _ := os.Stat(file)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %o, want 600", st.Mode().Perm())
	}
	return file, strings.TrimSpace(out)
}

const dbSecret = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData:\n  password: hunter2-plaintext\n"

func TestSecretsEndToEnd(t *testing.T) {
	cp := testenv.ControlPlane(t)
	kc := cp.Kubeconfig
	alice, aliceR := keygen(t)
	bob, bobR := keygen(t)
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{
		".sops.yaml": "creation_rules:\n  - path_regex: .*\\.yaml$\n    age: " + aliceR + "," + bobR + "\n",
		"c.yaml":     "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: sec}\nspec:\n  components:\n  - {name: secns, path: ns}\n  - {name: db, path: db, namespace: sec, dependsOn: [secns]}\n",
		"ns/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: sec}\n",
		"db/db.yaml": dbSecret,
	})
	// validate warns about the plain Secret, --strict fails.
	code, _, stderr := run(t, "validate", "--repo", dir)
	if code != 0 || !strings.Contains(stderr, "warning: db/db.yaml:1: Secret/db: Secret committed unencrypted") {
		t.Fatalf("validate = %d %s", code, stderr)
	}
	if code, _, _ := run(t, "validate", "--repo", dir, "--strict"); code != 2 {
		t.Fatalf("validate --strict = %d", code)
	}
	// 1. Encrypt the Secret in the repository.
	file := filepath.Join(dir, "db/db.yaml")
	if code, _, stderr := run(t, "secret", "encrypt", file); code != 0 {
		t.Fatalf("encrypt = %d %s", code, stderr)
	}
	enc, _ := os.ReadFile(file)
	if strings.Contains(string(enc), "hunter2") {
		t.Fatal("plaintext left in the encrypted file")
	}
	if code, _, stderr := run(t, "validate", "--repo", dir, "--strict"); code != 0 {
		t.Fatalf("validate --strict after encrypt = %d %s", code, stderr)
	}
	base := []string{"--repo", dir, "--cluster", "sec", "--kubeconfig", kc}

	// No identity: the component is refused, naming the file and recipients; nothing is applied.
	code, out, _ := run(t, append([]string{"apply"}, base...)...)
	if code != 2 || !strings.Contains(out, "db/db.yaml: cannot decrypt: no identity for its recipients") || !strings.Contains(out, aliceR) {
		t.Fatalf("apply without identity = %d\n%s", code, out)
	}
	cs, _ := kubernetes.NewForConfig(cp.Config)
	ctx := context.Background()
	if _, err := cs.CoreV1().Secrets("sec").Get(ctx, "db", metav1.GetOptions{}); err == nil {
		t.Fatal("a Secret was applied without decryption")
	}

	// 3a. diff shows no plaintext.
	withID := append([]string{"--age-identity", alice}, base...)
	code, out, stderr = run(t, append([]string{"diff"}, withID...)...)
	if code != 1 || strings.Contains(out+stderr, "hunter2") || !strings.Contains(out, "<redacted: sha256:") {
		t.Fatalf("diff = %d leaks or misses the redaction:\n%s%s", code, out, stderr)
	}
	// 2. apply: the cluster has the plaintext; the logs do not.
	code, out, stderr = run(t, append([]string{"apply", "--log-level", "debug"}, withID...)...)
	if code != 0 {
		t.Fatalf("apply = %d\n%s%s", code, out, stderr)
	}
	if strings.Contains(out+stderr, "hunter2") {
		t.Fatalf("apply output or logs leak the secret:\n%s%s", out, stderr)
	}
	s, err := cs.CoreV1().Secrets("sec").Get(ctx, "db", metav1.GetOptions{})
	if err != nil || string(s.Data["password"]) != "hunter2-plaintext" {
		t.Fatalf("cluster Secret = %v, %v", s, err)
	}
	rv := s.ResourceVersion
	// 3b. status and build show no plaintext.
	_, out, _ = run(t, "status", "--kubeconfig", kc, "-o", "json")
	_, bout, _ := run(t, append([]string{"build"}, withID...)...)
	if strings.Contains(out+bout, "hunter2") {
		t.Fatalf("status or build leaks the secret:\n%s\n%s", out, bout)
	}
	evs, _ := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	for _, e := range evs.Items {
		if strings.Contains(e.Message, "hunter2") {
			t.Fatalf("event leaks the secret: %s", e.Message)
		}
	}

	// 4. Rotate: bob leaves, the data key changes, re-apply changes nothing in the cluster.
	testenv.WriteFiles(t, dir, map[string]string{".sops.yaml": "creation_rules:\n  - path_regex: .*\\.yaml$\n    age: " + aliceR + "\n"})
	code, out, stderr = run(t, "secret", "rotate", "--dir", dir, "--age-identity", alice)
	if code != 0 || !strings.Contains(out, "✓ db/db.yaml: re-encrypted") || !strings.Contains(out, "1 files re-encrypted") {
		t.Fatalf("rotate = %d\n%s%s", code, out, stderr)
	}
	rotated, _ := os.ReadFile(file)
	if strings.Contains(string(rotated), bobR) {
		t.Fatal("bob is still a recipient")
	}
	if code, out, _ := run(t, "secret", "rotate", "--dir", dir, "--age-identity", alice); code != 0 || !strings.Contains(out, "untouched") {
		t.Fatalf("second rotate should touch nothing: %s", out)
	}
	if code, _, _ := run(t, "secret", "decrypt", file, "--age-identity", bob); code != 2 {
		t.Fatal("bob can still decrypt after rotation")
	}
	if code, out, stderr := run(t, append([]string{"apply"}, withID...)...); code != 0 {
		t.Fatalf("apply after rotate = %d %s%s", code, out, stderr)
	}
	s, _ = cs.CoreV1().Secrets("sec").Get(ctx, "db", metav1.GetOptions{})
	if s.ResourceVersion != rv {
		t.Errorf("rotation changed the cluster object (rv %s → %s)", rv, s.ResourceVersion)
	}

	// The identity can come from the Secret tend-system/sops-age instead of a file.
	key, _ := os.ReadFile(alice)
	_ = cs.CoreV1().Secrets("tend-system").Delete(ctx, "sops-age", metav1.DeleteOptions{}) // another test's bootstrap may have made one
	if _, err := cs.CoreV1().Secrets("tend-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sops-age", Namespace: "tend-system"},
		Data: map[string][]byte{"age.agekey": key}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := run(t, append([]string{"apply"}, base...)...); code != 0 {
		t.Fatalf("apply with the identity from the cluster Secret = %d %s%s", code, out, stderr)
	}

	// A tampered file: MAC mismatch, nothing applied.
	tampered := strings.Replace(string(rotated), "password: ENC[AES256_GCM,data:", "password: ENC[AES256_GCM,data:AA", 1)
	testenv.WriteFiles(t, dir, map[string]string{"db/db.yaml": tampered})
	code, out, _ = run(t, append([]string{"apply"}, withID...)...)
	if code != 2 || !strings.Contains(out, "db/db.yaml") {
		t.Fatalf("apply of a tampered file = %d\n%s", code, out)
	}
	s, _ = cs.CoreV1().Secrets("sec").Get(ctx, "db", metav1.GetOptions{})
	if s.ResourceVersion != rv {
		t.Error("a tampered file changed the cluster")
	}
}

func TestSecretVerbs(t *testing.T) {
	id, r := keygen(t)
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{".sops.yaml": "creation_rules:\n  - path_regex: secrets/.*\n    age: " + r + "\n", "secrets/db.yaml": dbSecret, "other.yaml": dbSecret})
	file := filepath.Join(dir, "secrets/db.yaml")
	if code, _, stderr := run(t, "secret", "encrypt", filepath.Join(dir, "other.yaml")); code != 2 || !strings.Contains(stderr, "no creation rule") || !strings.Contains(stderr, "hint:") {
		t.Fatalf("encrypt without a rule = %d %s", code, stderr)
	}
	if code, _, _ := run(t, "secret", "encrypt", file); code != 0 {
		t.Fatal("encrypt failed")
	}
	// set reads the value from stdin, never argv.
	if code, _, stderr := runStdin(t, "s3cr3t-from-stdin\n", "secret", "set", file, "password", "--age-identity", id); code != 0 {
		t.Fatalf("set = %d %s", code, stderr)
	}
	if code, out, _ := run(t, "secret", "get", file, "password", "--age-identity", id); code != 0 || strings.TrimSpace(out) != "s3cr3t-from-stdin" {
		t.Fatalf("get = %d %q", code, out)
	}
	before, _ := os.ReadFile(file)
	// An editor that fails keeps the file unchanged.
	t.Setenv("EDITOR", "false")
	if code, _, stderr := run(t, "secret", "edit", file, "--age-identity", id); code != 2 || !strings.Contains(stderr, "unchanged") {
		t.Fatalf("edit with a failing editor = %d %s", code, stderr)
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Fatal("a failed edit changed the file")
	}
	// An editor that succeeds: the change is re-encrypted.
	script := filepath.Join(t.TempDir(), "ed.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nsed -i 's/s3cr3t-from-stdin/edited-value/' \"$1\"\n"), 0o755)
	t.Setenv("EDITOR", script)
	if code, _, stderr := run(t, "secret", "edit", file, "--age-identity", id); code != 0 {
		t.Fatalf("edit = %d %s", code, stderr)
	}
	if _, out, _ := run(t, "secret", "get", file, "password", "--age-identity", id); strings.TrimSpace(out) != "edited-value" {
		t.Fatalf("after edit: %q", out)
	}
	if after, _ := os.ReadFile(file); strings.Contains(string(after), "edited-value") {
		t.Fatal("edit wrote plaintext")
	}
	entries, _ := os.ReadDir("/dev/shm")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tend-edit-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
	// Loose permissions on the identity: a warning.
	os.Chmod(id, 0o644)
	if _, _, stderr := run(t, "secret", "get", file, "password", "--age-identity", id); !strings.Contains(stderr, "warning: age identity file") {
		t.Errorf("no warning for a 0644 identity: %s", stderr)
	}
	// The pre-commit check refuses a plain Secret.
	wd, _ := os.Getwd()
	os.Chdir(dir)
	defer os.Chdir(wd)
	if code, _, stderr := run(t, "secret", "check", "other.yaml", "secrets/db.yaml"); code != 2 || !strings.Contains(stderr, "other.yaml:1: Secret/db: Secret committed unencrypted") {
		t.Fatalf("check = %d %s", code, stderr)
	}
}
