package unseal_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keys"
	"github.com/getsops/sops/v3/keyservice"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
	"github.com/google/go-cmp/cmp"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/secret/unseal"
	"tend.dev/tend/internal/testenv"
)

const yamlAll = `# database settings
db:
    host: db.internal # the primary
    port: 5432
    ratio: 0.75
    tls: true
    password: "s3cr3t: with colon"
    empty: ""
    nothing: null
    # the replicas, in order
    replicas:
        - r1.internal
        - 7
        - name: r2
          weight: 1.5
        - - nested
          - list
motd: |
    line one
    line two
`

const yamlSecret = `apiVersion: v1
kind: Secret
metadata:
    name: app
    namespace: default
# keep this short
stringData:
    token: abc123 # rotated monthly
    dsn: postgres://app@db/app
type: Opaque
---
apiVersion: v1
kind: Secret
metadata:
    name: second
data:
    key: dmFsdWU=
`

const jsonAll = `{
	"name": "app",
	"port": 8080,
	"ratio": 0.5,
	"big": 12345678901,
	"on": true,
	"off": false,
	"none": null,
	"html": "<b>&amp;</b>",
	"list": [1, "two", {"three": 3}, [4]],
	"nested": {"a": {"b": "c"}}
}
`

func ident(t *testing.T) (*age.X25519Identity, *unseal.Identities) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	ids := &unseal.Identities{}
	if err := ids.Add("test", []byte(id.String()+"\n")); err != nil {
		t.Fatal(err)
	}
	return id, ids
}

// encrypt encrypts with the sops library itself, with metadata options the
// tend CLI does not set, so that unseal meets every form sops writes.
func encrypt(t *testing.T, file string, plain []byte, groups [][]string, threshold int, set func(*sops.Metadata)) []byte {
	t.Helper()
	var store interface {
		LoadPlainFile([]byte) (sops.TreeBranches, error)
		EmitEncryptedFile(sops.Tree) ([]byte, error)
	}
	switch unseal.FormatOf(file) {
	case unseal.YAML:
		store = &sopsyaml.Store{}
	case unseal.JSON:
		store = sopsjson.NewStore(&config.JSONStoreConfig{Indent: -1})
	default:
		store = sopsjson.NewBinaryStore(&config.JSONBinaryStoreConfig{Indent: -1})
	}
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	md := sops.Metadata{ShamirThreshold: threshold, Version: "3.13.3"}
	for _, g := range groups {
		var kg sops.KeyGroup
		for _, r := range g {
			mk, err := sopsage.MasterKeyFromRecipient(r)
			if err != nil {
				t.Fatal(err)
			}
			kg = append(kg, keys.MasterKey(mk))
		}
		md.KeyGroups = append(md.KeyGroups, kg)
	}
	if set != nil {
		set(&md)
	}
	tree := sops.Tree{Branches: branches, Metadata: md}
	key := make([]byte, 32)
	rand.Read(key)
	if errs := tree.Metadata.UpdateMasterKeysWithKeyServices(key, []keyservice.KeyServiceClient{keyservice.NewLocalClient()}); len(errs) > 0 {
		t.Fatal(errs)
	}
	c := aes.NewCipher()
	mac, err := tree.Encrypt(key, c)
	if err != nil {
		t.Fatal(err)
	}
	tree.Metadata.LastModified = time.Now().UTC()
	if tree.Metadata.MessageAuthenticationCode, err = c.Encrypt(mac, key, tree.Metadata.LastModified.Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	out, err := store.EmitEncryptedFile(tree)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSameAsLibrary decrypts files the sops library wrote, with every
// metadata option that changes what is encrypted or hashed, and requires
// unseal's bytes to be the library's.
func TestSameAsLibrary(t *testing.T) {
	alice, ids := ident(t)
	bob, bobIDs := ident(t)
	carol, _ := ident(t)
	one := [][]string{{alice.Recipient().String()}}
	tests := []struct {
		name, file, plain string
		groups            [][]string
		threshold         int
		set               func(*sops.Metadata)
		ids               *unseal.Identities
	}{
		{name: "yaml all values and comments", file: "a.yaml", plain: yamlAll, groups: one},
		{name: "yaml kubernetes secrets, encrypted_regex, two documents", file: "s.yaml", plain: yamlSecret, groups: one,
			set: func(m *sops.Metadata) { m.EncryptedRegex = secret.DefaultEncryptedRegex }},
		{name: "yaml unencrypted_suffix", file: "a.yml", plain: yamlAll, groups: one,
			set: func(m *sops.Metadata) { m.UnencryptedSuffix = "_unencrypted" }},
		{name: "yaml encrypted_suffix", file: "a.yaml", plain: "user: me\npassword_enc: x\nlist_enc:\n    - a\n", groups: one,
			set: func(m *sops.Metadata) { m.EncryptedSuffix = "_enc" }},
		{name: "yaml unencrypted_regex", file: "a.yaml", plain: yamlAll, groups: one,
			set: func(m *sops.Metadata) { m.UnencryptedRegex = "^(host|port)$" }},
		{name: "yaml mac_only_encrypted", file: "s.yaml", plain: yamlSecret, groups: one,
			set: func(m *sops.Metadata) { m.EncryptedRegex = "^stringData$"; m.MACOnlyEncrypted = true }},
		{name: "yaml second recipient decrypts", file: "a.yaml", plain: yamlAll, ids: bobIDs,
			groups: [][]string{{alice.Recipient().String(), bob.Recipient().String()}}},
		{name: "yaml shamir two of three groups", file: "a.yaml", plain: yamlAll, threshold: 2,
			groups: [][]string{{alice.Recipient().String()}, {bob.Recipient().String()}, {carol.Recipient().String()}},
			ids: func() *unseal.Identities {
				both := &unseal.Identities{}
				both.Add("a", []byte(alice.String()))
				both.Add("b", []byte(bob.String()))
				return both
			}()},
		{name: "json", file: "c.json", plain: jsonAll, groups: one},
		{name: "json encrypted_regex", file: "c.json", plain: jsonAll, groups: one,
			set: func(m *sops.Metadata) { m.EncryptedRegex = "^(name|list)$" }},
		{name: "binary", file: "tls.key", plain: "-----BEGIN KEY-----\nAAAA\x00\xff\n-----END KEY-----\n", groups: one},
		{name: "binary empty", file: "empty.txt", plain: "", groups: one},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			use := ids
			if tc.ids != nil {
				use = tc.ids
			}
			enc := encrypt(t, tc.file, []byte(tc.plain), tc.groups, tc.threshold, tc.set)
			if !unseal.IsEncrypted(enc) {
				t.Fatalf("IsEncrypted = false for\n%s", enc)
			}
			want, err := secret.Decrypt(tc.file, enc, use)
			if err != nil {
				t.Fatalf("library: %v", err)
			}
			got, err := unseal.Decrypt(tc.file, enc, use)
			if err != nil {
				t.Fatalf("unseal: %v\n%s", err, enc)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("unseal differs from the sops library (-library +unseal):\n%s", diff)
			}
		})
	}
}

// TestTendEncrypted reads what `tend secret encrypt` writes.
func TestTendEncrypted(t *testing.T) {
	alice, ids := ident(t)
	rule, err := secret.AgeRule(alice.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"s.yaml", "c.json", "password.txt"} {
		plain := map[string]string{"s.yaml": yamlSecret, "c.json": jsonAll, "password.txt": "hunter2\n"}[f]
		enc, err := secret.Encrypt(f, []byte(plain), rule)
		if err != nil {
			t.Fatal(err)
		}
		got, err := unseal.Decrypt(f, enc, ids)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want, _ := secret.Decrypt(f, enc, ids)
		if string(got) != string(want) {
			t.Errorf("%s: got\n%s\nwant\n%s", f, got, want)
		}
	}
}

func TestBadInput(t *testing.T) {
	alice, ids := ident(t)
	_, other := ident(t)
	one := [][]string{{alice.Recipient().String()}}
	good := encrypt(t, "a.yaml", []byte(yamlAll), one, 0, nil)
	goodJSON := encrypt(t, "c.json", []byte(jsonAll), one, 0, nil)
	// Swap two ciphertexts of the same type: each authenticates on its
	// own, but not at the other's path.
	lines := strings.Split(string(good), "\n")
	var hostAt, motdAt int
	for i, l := range lines {
		if strings.Contains(l, "host: ENC[") {
			hostAt = i
		}
		if strings.Contains(l, "motd: ENC[") {
			motdAt = i
		}
	}
	swapped := append([]string(nil), lines...)
	swapped[hostAt] = "    host: " + strings.TrimPrefix(lines[motdAt], "motd: ")
	var removed []string
	for _, l := range lines {
		if !strings.Contains(l, "ratio: ENC[") {
			removed = append(removed, l)
		}
	}
	tests := []struct {
		name, file, data string
		ids              *unseal.Identities
		want             string
	}{
		{name: "value removed", file: "a.yaml", data: strings.Join(removed, "\n"), ids: ids, want: "MAC mismatch"},
		{name: "no identity", file: "a.yaml", data: string(good), ids: &unseal.Identities{}, want: "no identity for its recipients " + alice.Recipient().String()},
		{name: "wrong identity", file: "a.yaml", data: string(good), ids: other, want: "no identity for its recipients"},
		{name: "value moved to another key", file: "a.yaml", data: strings.Join(swapped, "\n"), ids: ids, want: "db.host: value fails authentication"},
		{name: "value edited in plaintext", file: "a.yaml", data: strings.Replace(string(good), "tls: ENC[", "tls: true\n    x: ENC[", 1), ids: ids, want: "decrypt values"},
		{name: "value added", file: "a.yaml", data: strings.Replace(string(good), "motd:", "extra: 5\nmotd:", 1), ids: ids, want: "extra: expected an encrypted value"},
		{name: "mac removed", file: "a.yaml", data: regexpReplace(string(good), "mac: ENC", "mac: XENC"), ids: ids, want: "MAC mismatch"},
		{name: "truncated", file: "a.yaml", data: string(good[:len(good)/2]), ids: ids, want: "not a valid SOPS file"},
		{name: "json value removed", file: "c.json", data: strings.Replace(string(goodJSON), "\t\"port\": ", "\t\"port_x\": ", 1), ids: ids, want: "port_x: value fails authentication"},
		{name: "not json", file: "c.json", data: "[1,2]", ids: ids, want: "not a valid SOPS file: the file is not a JSON object"},
		{name: "comment regex", file: "a.yaml", data: strings.Replace(string(good), "sops:\n", "sops:\n    encrypted_comment_regex: '^sops:'\n", 1), ids: ids, want: "encrypted_comment_regex"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := unseal.Decrypt(tc.file, []byte(tc.data), tc.ids)
			if err == nil {
				t.Fatalf("no error; got\n%s", out)
			}
			if out != nil {
				t.Errorf("partial output on error: %q", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			var me *model.Error
			if !asModelError(err, &me) || me.Origin.File != tc.file || me.Hint == "" {
				t.Errorf("want a model.Error naming %s with a hint, got %#v", tc.file, err)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "AGE-SECRET-KEY") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

func regexpReplace(s, old, new string) string { return strings.Replace(s, old, new, 1) }

func asModelError(err error, me **model.Error) bool {
	e, ok := err.(*model.Error)
	*me = e
	return ok
}

// FuzzDecrypt feeds mangled files to the reader the machine agent runs on
// whatever is in git: it must return an error, never panic, and never
// return data without a valid MAC.
//
//	go test ./internal/secret/unseal -run '^$' -fuzz FuzzDecrypt -fuzztime 60s
func FuzzDecrypt(f *testing.F) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		f.Fatal(err)
	}
	ids := &unseal.Identities{}
	ids.Add("fuzz", []byte(id.String()))
	rule, _ := secret.AgeRule(id.Recipient().String())
	for name, plain := range map[string]string{"a.yaml": yamlAll, "s.yaml": yamlSecret, "c.json": jsonAll, "p.txt": "hunter2\n"} {
		enc, err := secret.Encrypt(name, []byte(plain), rule)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(name, enc)
	}
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		out, err := unseal.Decrypt(name, data, ids)
		if err != nil && out != nil {
			t.Fatalf("output with an error: %q", out)
		}
	})
}

// TestSopsCLI reads files the real sops CLI encrypted, and requires the
// bytes `sops decrypt` gives for them.
func TestSopsCLI(t *testing.T) {
	sops := testenv.SopsCLI(t)
	alice, _ := ident(t)
	bob, _ := ident(t)
	both := &unseal.Identities{}
	both.Add("test", []byte(alice.String()+"\n"+bob.String()+"\n"))
	dir := t.TempDir()
	// Shamir key groups and mac_only_encrypted come only from a config
	// file; the last rule catches the rest, whose flags say how.
	os.WriteFile(filepath.Join(dir, ".sops.yaml"), []byte(fmt.Sprintf(`creation_rules:
  - path_regex: shamir\.yaml$
    shamir_threshold: 2
    key_groups:
      - age: [%[1]s]
      - age: [%[2]s]
  - path_regex: m\.yaml$
    encrypted_regex: ^stringData$
    mac_only_encrypted: true
    age: %[1]s
  - age: %[1]s
`, alice.Recipient(), bob.Recipient())), 0o644)
	sopsRun := func(args ...string) ([]byte, error) {
		cmd := exec.Command(sops, args...)
		cmd.Dir = dir
		// Hermetic: no keys.txt from a home directory, only these keys.
		cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin", "SOPS_AGE_KEY=" + alice.String() + "\n" + bob.String()}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("sops %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return out, nil
	}
	age := []string{"--age", alice.Recipient().String()}
	tests := []struct {
		name, file, plain string
		flags             []string
	}{
		{"yaml", "a.yaml", yamlAll, age},
		{"yaml encrypted_regex, two documents", "s.yaml", yamlSecret, append([]string{"--encrypted-regex", "^(data|stringData)$"}, age...)},
		{"yaml unencrypted_suffix", "b.yaml", yamlAll + "note_unencrypted: plain\n", append([]string{"--unencrypted-suffix", "_unencrypted"}, age...)},
		{"yaml mac_only_encrypted from .sops.yaml", "m.yaml", yamlSecret, nil},
		{"yaml shamir from .sops.yaml", "shamir.yaml", yamlAll, nil},
		{"json", "c.json", jsonAll, age},
		{"binary", "tls.key", "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n", age},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.plain), 0o600)
			enc, err := sopsRun(append(append([]string{"encrypt"}, tc.flags...), tc.file)...)
			if err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(filepath.Join(dir, "enc"), 0o700)
			encFile := filepath.Join("enc", tc.file)
			os.WriteFile(filepath.Join(dir, encFile), enc, 0o600)
			want, err := sopsRun("decrypt", encFile)
			if err != nil {
				t.Fatal(err)
			}
			got, err := unseal.Decrypt(tc.file, enc, both)
			if err != nil {
				t.Fatalf("unseal: %v\n%s", err, enc)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("unseal differs from sops decrypt (-sops +unseal):\n%s", diff)
			}
		})
	}
	// The other way: what tend encrypts, the sops CLI decrypts.
	rule, _ := secret.AgeRule(alice.Recipient().String())
	enc, err := secret.Encrypt("t.yaml", []byte(yamlSecret), rule)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "enc", "t.yaml"), enc, 0o600)
	out, err := sopsRun("decrypt", filepath.Join("enc", "t.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if mine, _ := unseal.Decrypt("t.yaml", enc, both); string(mine) != string(out) {
		t.Errorf("sops decrypt of tend's file:\n%s\nunseal:\n%s", out, mine)
	}
}
