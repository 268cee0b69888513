// Package unseal decrypts SOPS files encrypted for age recipients, the
// files `tend secret encrypt` and the sops CLI write, without linking the
// sops library.
//
// Why not the library: its root package imports every key service it
// knows (AWS, GCP and Azure KMS, Vault, HuaweiCloud, PGP), which costs the
// machine agent 50 MB of executable and 27 MB of resident memory before it
// has done anything, and the agent only ever decrypts with age. The cluster
// side keeps using the library (package secret); tests check that both
// produce the same bytes for the same files, and read files the sops CLI
// wrote.
//
// The rules are the library's: a file is decrypted whole or not at all; a
// MAC mismatch, a value that fails authentication or a missing identity is
// an error, never ciphertext handed out as data.
package unseal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/getsops/sops/v3/shamir"

	"tend.dev/tend/internal/model"
)

var (
	sopsKey     = regexp.MustCompile(`(?m)^sops:\s*$`)
	sopsJSONKey = regexp.MustCompile(`(?m)^\s*"sops":\s*\{`)
)

// IsEncrypted reports whether data is a SOPS-encrypted file: YAML, or the
// JSON envelope SOPS uses for JSON and for any other file (binary).
func IsEncrypted(data []byte) bool {
	return sopsKey.Match(data) && bytes.Contains(data, []byte("mac:")) ||
		sopsJSONKey.Match(data) && bytes.Contains(data, []byte(`"mac":`))
}

// Format is how a file is stored, chosen by extension as the sops CLI
// does.
type Format int

// The formats.
const (
	YAML Format = iota
	JSON
	// Binary is any other file: the whole plaintext is one encrypted
	// value in a JSON envelope.
	Binary
)

// FormatOf picks the format of file by its extension.
func FormatOf(file string) Format {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".yaml", ".yml":
		return YAML
	case ".json":
		return JSON
	}
	return Binary
}

// Decrypt decrypts a SOPS file in memory. It fails, naming the file and its
// recipients, when no identity matches, and when the MAC does not match (a
// tampered or truncated file): it never returns partial data.
func Decrypt(file string, data []byte, ids *Identities) ([]byte, error) {
	doc, err := parse(FormatOf(file), data)
	if err != nil {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "not a valid SOPS file: " + err.Error(),
			Hint: "the file may be truncated or edited by hand; restore it from git history, or re-encrypt it with `tend secret encrypt`"}
	}
	md := doc.metadata()
	if md.UnencryptedCommentRegex != "" || md.EncryptedCommentRegex != "" {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "encrypted with encrypted_comment_regex or unencrypted_comment_regex, which machines do not read",
			Hint: "re-encrypt the file with encrypted_regex or a suffix rule in .sops.yaml instead"}
	}
	key, err := md.dataKey(ids)
	if err != nil {
		hint := "give tend an age identity for one of these recipients (--age-identity FILE, TEND_AGE_KEY, or the agent's Secret)"
		if ids.Len() > 0 {
			hint = fmt.Sprintf("tend has identities for %s, which are not recipients; re-encrypt the file for them (`tend secret rotate`) or give tend the right identity",
				strings.Join(ids.Recipients(), ", "))
		}
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: fmt.Sprintf("cannot decrypt: no identity for its recipients %s", strings.Join(md.recipients(), ", ")), Hint: hint}
	}
	w := &walker{md: md, key: key, mac: sha512.New()}
	if md.MACOnlyEncrypted {
		// The library starts this MAC kind with sha256("sops"), so that the
		// two kinds never collide.
		seed := sha256.Sum256([]byte("sops"))
		w.mac.Write(seed[:])
	}
	if err := doc.decrypt(w); err != nil {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "decrypt values: " + err.Error(), Hint: "the file was tampered with or corrupted; restore it from git history"}
	}
	lm, err := time.Parse(time.RFC3339, md.LastModified)
	var fileMAC any
	if err == nil {
		fileMAC, err = decryptValue(md.MAC, key, lm.Format(time.RFC3339))
	}
	if err != nil || fileMAC != fmt.Sprintf("%X", w.mac.Sum(nil)) {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "MAC mismatch: the file was changed after it was encrypted",
			Hint: "edit encrypted files only with `tend secret edit` or `sops`; restore it from git history"}
	}
	return doc.emit()
}

// document is a parsed file of one format.
type document interface {
	metadata() *metadata
	decrypt(w *walker) error
	emit() ([]byte, error)
}

func parse(f Format, data []byte) (document, error) {
	switch f {
	case YAML:
		return parseYAML(data)
	case JSON:
		return parseJSON(data, false)
	}
	return parseJSON(data, true)
}

type ageKey struct {
	Recipient string `yaml:"recipient" json:"recipient"`
	Enc       string `yaml:"enc" json:"enc"`
}

// keyGroup holds age keys; other key types are only counted, to name them
// when nothing here can decrypt.
type keyGroup struct {
	Age     []ageKey         `yaml:"age" json:"age"`
	PGP     []map[string]any `yaml:"pgp" json:"pgp"`
	KMS     []map[string]any `yaml:"kms" json:"kms"`
	GCPKMS  []map[string]any `yaml:"gcp_kms" json:"gcp_kms"`
	AzureKV []map[string]any `yaml:"azure_kv" json:"azure_kv"`
	HCVault []map[string]any `yaml:"hc_vault" json:"hc_vault"`
	HCKMS   []map[string]any `yaml:"hckms" json:"hckms"`
}

// metadata is the file's sops section.
type metadata struct {
	keyGroup                `yaml:",inline"`
	KeyGroups               []keyGroup `yaml:"key_groups" json:"key_groups"`
	ShamirThreshold         int        `yaml:"shamir_threshold" json:"shamir_threshold"`
	LastModified            string     `yaml:"lastmodified" json:"lastmodified"`
	MAC                     string     `yaml:"mac" json:"mac"`
	UnencryptedSuffix       string     `yaml:"unencrypted_suffix" json:"unencrypted_suffix"`
	EncryptedSuffix         string     `yaml:"encrypted_suffix" json:"encrypted_suffix"`
	UnencryptedRegex        string     `yaml:"unencrypted_regex" json:"unencrypted_regex"`
	EncryptedRegex          string     `yaml:"encrypted_regex" json:"encrypted_regex"`
	UnencryptedCommentRegex string     `yaml:"unencrypted_comment_regex" json:"unencrypted_comment_regex"`
	EncryptedCommentRegex   string     `yaml:"encrypted_comment_regex" json:"encrypted_comment_regex"`
	MACOnlyEncrypted        bool       `yaml:"mac_only_encrypted" json:"mac_only_encrypted"`

	unencryptedRe, encryptedRe *regexp.Regexp
}

func (m *metadata) compile() error {
	var err error
	if m.UnencryptedRegex != "" {
		if m.unencryptedRe, err = regexp.Compile(m.UnencryptedRegex); err != nil {
			return fmt.Errorf("unencrypted_regex: %w", err)
		}
	}
	if m.EncryptedRegex != "" {
		if m.encryptedRe, err = regexp.Compile(m.EncryptedRegex); err != nil {
			return fmt.Errorf("encrypted_regex: %w", err)
		}
	}
	if m.MAC == "" || m.LastModified == "" {
		return errors.New("the sops section has no mac or lastmodified")
	}
	return nil
}

func (m *metadata) groups() []keyGroup {
	if len(m.KeyGroups) > 0 {
		return m.KeyGroups
	}
	return []keyGroup{m.keyGroup}
}

func (m *metadata) recipients() []string {
	var out []string
	for _, g := range m.groups() {
		for _, k := range g.Age {
			out = append(out, k.Recipient)
		}
		for kind, n := range map[string]int{"pgp": len(g.PGP), "kms": len(g.KMS), "gcp_kms": len(g.GCPKMS), "azure_kv": len(g.AzureKV), "hc_vault": len(g.HCVault), "hckms": len(g.HCKMS)} {
			if n > 0 {
				out = append(out, fmt.Sprintf("%d %s key(s), which machines do not use", n, kind))
			}
		}
	}
	sort.Strings(out)
	return out
}

// dataKey recovers the file's data key: from any age key of the only group,
// or from enough groups' Shamir shares.
func (m *metadata) dataKey(ids *Identities) ([]byte, error) {
	if ids.Len() == 0 {
		// Never fall back to ambient keys: tend uses only what it was given.
		return nil, errors.New("no identity given")
	}
	var parts [][]byte
	for _, g := range m.groups() {
		for _, k := range g.Age {
			r, err := age.Decrypt(armor.NewReader(strings.NewReader(k.Enc)), ids.Age()...)
			if err != nil {
				continue
			}
			b, err := io.ReadAll(r)
			if err != nil {
				continue
			}
			parts = append(parts, b)
			break
		}
	}
	if len(m.groups()) == 1 {
		if len(parts) != 1 {
			return nil, errors.New("no identity matches")
		}
		return parts[0], nil
	}
	if len(parts) == 0 || len(parts) < m.ShamirThreshold {
		return nil, fmt.Errorf("%d of %d key groups decrypted, %d needed", len(parts), len(m.groups()), m.ShamirThreshold)
	}
	return shamir.Combine(parts)
}

// encrypted is the library's shouldBeEncrypted for values, whose path is
// the keys from the root (list indexes are not part of it).
func (m *metadata) encrypted(path []string) bool {
	enc := true
	if m.UnencryptedSuffix != "" {
		for _, p := range path {
			if strings.HasSuffix(p, m.UnencryptedSuffix) {
				enc = false
				break
			}
		}
	}
	if m.EncryptedSuffix != "" {
		enc = false
		for _, p := range path {
			if strings.HasSuffix(p, m.EncryptedSuffix) {
				enc = true
				break
			}
		}
	}
	if m.unencryptedRe != nil {
		for _, p := range path {
			if m.unencryptedRe.MatchString(p) {
				enc = false
				break
			}
		}
	}
	if m.encryptedRe != nil {
		enc = false
		for _, p := range path {
			if m.encryptedRe.MatchString(p) {
				enc = true
				break
			}
		}
	}
	return enc
}

// walker decrypts leaves in document order and feeds the MAC.
type walker struct {
	md  *metadata
	key []byte
	mac hash.Hash
}

// leaf decrypts one value at path, as the format decoded it, and reports
// whether it was encrypted.
func (w *walker) leaf(path []string, v any) (any, bool, error) {
	if v == nil {
		return nil, false, nil // the library neither decrypts nor hashes nulls
	}
	encrypted := w.md.encrypted(path)
	if encrypted {
		s, ok := v.(string)
		if !ok {
			return nil, false, fmt.Errorf("%s: expected an encrypted value, found %T", strings.Join(path, "."), v)
		}
		var err error
		if v, err = decryptValue(s, w.key, strings.Join(path, ":")+":"); err != nil {
			return nil, false, fmt.Errorf("%s: %w", strings.Join(path, "."), err)
		}
	}
	if !w.md.MACOnlyEncrypted || encrypted {
		b, err := toBytes(v)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", strings.Join(path, "."), err)
		}
		w.mac.Write(b)
	}
	return v, encrypted, nil
}

// comment decrypts one comment line (without its '#') found in the
// container at path. A comment that does not decrypt is kept as it is, as
// the library does: files from before comments were encrypted have them.
func (w *walker) comment(path []string, c string) string {
	if !strings.HasPrefix(c, "ENC[AES256_GCM,") {
		return c
	}
	v, err := decryptValue(c, w.key, strings.Join(path, ":")+":")
	if err != nil {
		return c
	}
	if s, ok := v.(comment); ok {
		return string(s)
	}
	if s, ok := v.(string); ok {
		return s
	}
	return c
}

// comment is a decrypted value of type comment.
type comment string

var encValue = regexp.MustCompile(`^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]`)

// decryptValue opens one ENC[AES256_GCM,…] value, authenticated with its
// path, and returns it as the type it was encrypted from.
func decryptValue(s string, key []byte, aad string) (any, error) {
	if s == "" {
		return "", nil
	}
	m := encValue.FindStringSubmatch(s)
	if m == nil {
		return nil, errors.New("not an encrypted value")
	}
	var parts [3][]byte
	for i := range parts {
		b, err := base64.StdEncoding.DecodeString(m[i+1])
		if err != nil {
			return nil, errors.New("bad base64 in encrypted value")
		}
		parts[i] = b
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(parts[1]))
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, parts[1], append(parts[0], parts[2]...), []byte(aad))
	if err != nil {
		return nil, errors.New("value fails authentication")
	}
	switch m[4] {
	case "str":
		return string(plain), nil
	case "int":
		return strconv.Atoi(string(plain))
	case "float":
		return strconv.ParseFloat(string(plain), 64)
	case "bytes":
		return plain, nil
	case "bool":
		return strconv.ParseBool(string(plain))
	case "time":
		var t time.Time
		err := t.UnmarshalText(plain)
		return t, err
	case "comment":
		return comment(plain), nil
	}
	return nil, fmt.Errorf("unknown value type %q", m[4])
}

// toBytes is what the MAC covers of a value: the library's ToBytes.
func toBytes(v any) ([]byte, error) {
	switch v := v.(type) {
	case string:
		return []byte(v), nil
	case int:
		return []byte(strconv.Itoa(v)), nil
	case float64:
		return []byte(strconv.FormatFloat(v, 'f', -1, 64)), nil
	case bool:
		if v {
			return []byte("True"), nil
		}
		return []byte("False"), nil
	case []byte:
		return v, nil
	case time.Time:
		return v.MarshalText()
	case comment:
		return []byte(v), nil
	}
	return nil, fmt.Errorf("cannot hash a value of type %T", v)
}
