package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"tend.dev/tend/internal/model"
)

const plainSecret = `apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: hunter2
`

func identity(t *testing.T) (*age.X25519Identity, *Identities) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	ids := &Identities{}
	if err := ids.Add("test", []byte(id.String())); err != nil {
		t.Fatal(err)
	}
	return id, ids
}

func TestRoundTripAndBadInput(t *testing.T) {
	alice, aliceIDs := identity(t)
	_, malloryIDs := identity(t)
	rule, err := AgeRule(alice.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	enc, err := Encrypt("s.yaml", []byte(plainSecret), rule)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(enc), "hunter2") || !IsEncrypted(enc) {
		t.Fatalf("not encrypted:\n%s", enc)
	}
	if !strings.Contains(string(enc), "name: db") {
		t.Error("only data/stringData should be encrypted; metadata must stay readable")
	}
	plain, err := Decrypt("s.yaml", enc, aliceIDs)
	if err != nil || !strings.Contains(string(plain), "password: hunter2") {
		t.Fatalf("Decrypt = %s, %v", plain, err)
	}

	tests := []struct {
		name string
		data []byte
		ids  *Identities
		msg  string
		hint string
	}{
		{"wrong key", enc, malloryIDs, "cannot decrypt: no identity for its recipients " + alice.Recipient().String(), "not recipients"},
		{"no key at all", enc, &Identities{}, "cannot decrypt", "--age-identity"},
		{"tampered ciphertext", tamper(t, enc), aliceIDs, "", "restore it from git history"},
		{"truncated file", enc[:len(enc)*2/3], aliceIDs, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Decrypt("s.yaml", tc.data, tc.ids)
			if err == nil {
				t.Fatalf("decrypted %q", out)
			}
			if out != nil {
				t.Error("partial output on error")
			}
			if !strings.Contains(err.Error(), "s.yaml") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want the file and %q", err, tc.msg)
			}
			if !strings.Contains(model.HintOf(err), tc.hint) {
				t.Errorf("hint = %q, want %q", model.HintOf(err), tc.hint)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "AGE-SECRET-KEY") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

// tamper flips one character of the encrypted password value.
func tamper(t *testing.T, enc []byte) []byte {
	s := string(enc)
	i := strings.Index(s, "password: ENC[AES256_GCM,data:")
	if i < 0 {
		t.Fatalf("no encrypted value in\n%s", s)
	}
	j := i + len("password: ENC[AES256_GCM,data:")
	b := []byte(s)
	if b[j] == 'A' {
		b[j] = 'B'
	} else {
		b[j] = 'A'
	}
	return b
}

func TestRulesAndRotate(t *testing.T) {
	alice, aliceIDs := identity(t)
	bob, _ := identity(t)
	dir := t.TempDir()
	write := func(rs ...string) {
		os.WriteFile(filepath.Join(dir, ".sops.yaml"), []byte("creation_rules:\n  - path_regex: secrets/.*\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: "+strings.Join(rs, ",")+"\n"), 0o644)
	}
	write(alice.Recipient().String(), bob.Recipient().String())
	os.MkdirAll(filepath.Join(dir, "secrets"), 0o755)
	if _, err := RuleFor(filepath.Join(dir, "other.yaml")); err == nil || !strings.Contains(err.Error(), "no creation rule") || model.HintOf(err) == "" {
		t.Fatalf("no matching rule: %v", err)
	}
	file := filepath.Join(dir, "secrets", "db.yaml")
	rule, err := RuleFor(file)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := Encrypt(file, []byte(plainSecret), rule)
	if err != nil {
		t.Fatal(err)
	}
	// Same recipients, no rotation asked: untouched.
	same, changed, err := Reencrypt(file, enc, aliceIDs, rule, false)
	if err != nil || changed || string(same) != string(enc) {
		t.Fatalf("Reencrypt with matching recipients changed the file (%v, %v)", changed, err)
	}
	// Bob leaves: re-encrypted for alice alone, with a new data key.
	write(alice.Recipient().String())
	rule, _ = RuleFor(file)
	out, changed, err := Reencrypt(file, enc, aliceIDs, rule, false)
	if err != nil || !changed {
		t.Fatalf("Reencrypt after removing a recipient: %v %v", changed, err)
	}
	if strings.Contains(string(out), bob.Recipient().String()) {
		t.Error("removed recipient still in the file")
	}
	if plain, err := Decrypt(file, out, aliceIDs); err != nil || !strings.Contains(string(plain), "hunter2") {
		t.Fatalf("after rotation: %v", err)
	}
}

func TestLoosePermissionsWarn(t *testing.T) {
	id, _ := identity(t)
	f := filepath.Join(t.TempDir(), "key.txt")
	os.WriteFile(f, []byte(id.String()+"\n"), 0o644)
	ids := &Identities{}
	warn, err := ids.LoadFile(f)
	if err != nil || !strings.Contains(string(warn), "chmod 600") {
		t.Fatalf("warn = %q, err = %v", warn, err)
	}
	os.Chmod(f, 0o600)
	if warn, _ := (&Identities{}).LoadFile(f); warn != "" {
		t.Errorf("0600 file warned: %s", warn)
	}
}

// TestNoAmbientIdentities: with no identity given, tend refuses even when
// the environment holds one that would decrypt (SOPS_AGE_KEY, keys.txt).
func TestNoAmbientIdentities(t *testing.T) {
	alice, _ := identity(t)
	rule, _ := AgeRule(alice.Recipient().String())
	enc, err := Encrypt("s.yaml", []byte(plainSecret), rule)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOPS_AGE_KEY", alice.String())
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	os.MkdirAll(filepath.Join(home, ".config/sops/age"), 0o700)
	os.WriteFile(filepath.Join(home, ".config/sops/age/keys.txt"), []byte(alice.String()+"\n"), 0o600)
	if out, err := Decrypt("s.yaml", enc, &Identities{}); err == nil {
		t.Fatalf("decrypted with an ambient identity: %s", out)
	}
	if out, err := Decrypt("s.yaml", enc, nil); err == nil {
		t.Fatalf("decrypted with nil identities: %s", out)
	}
}
