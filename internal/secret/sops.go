package secret

import (
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keys"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
	"github.com/getsops/sops/v3/version"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret/unseal"
)

// IsEncrypted reports whether data is a SOPS-encrypted file: YAML, or the
// JSON envelope SOPS uses for JSON and for any other file (binary).
func IsEncrypted(data []byte) bool { return unseal.IsEncrypted(data) }

// store is the part of a SOPS store tend uses.
type store interface {
	LoadEncryptedFile([]byte) (sops.Tree, error)
	LoadPlainFile([]byte) (sops.TreeBranches, error)
	EmitEncryptedFile(sops.Tree) ([]byte, error)
	EmitPlainFile(sops.TreeBranches) ([]byte, error)
	HasSopsTopLevelKey(sops.TreeBranch) bool
}

// storeFor picks the format as the sops CLI does, by extension: YAML,
// JSON, or binary (the whole file as one encrypted value) for the rest,
// such as a certificate or a password file a machine needs verbatim.
func storeFor(file string) store {
	// Indent -1 is the sops CLI's default for JSON: tabs.
	switch unseal.FormatOf(file) {
	case unseal.YAML:
		return &sopsyaml.Store{}
	case unseal.JSON:
		return sopsjson.NewStore(&config.JSONStoreConfig{Indent: -1})
	}
	return sopsjson.NewBinaryStore(&config.JSONBinaryStoreConfig{Indent: -1})
}

// DefaultEncryptedRegex encrypts only the values of Kubernetes Secrets,
// as SOPS users configure with encrypted_regex.
const DefaultEncryptedRegex = "^(data|stringData)$"

// Decrypt decrypts a SOPS YAML file in memory. It fails, naming the file
// and its recipients, when no identity matches, and when the MAC does not
// match (a tampered or truncated file): it never returns partial data.
func Decrypt(file string, data []byte, ids *Identities) ([]byte, error) {
	store := storeFor(file)
	tree, err := store.LoadEncryptedFile(data)
	if err != nil {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "not a valid SOPS file: " + err.Error(),
			Hint: "the file may be truncated or edited by hand; restore it from git history, or re-encrypt it with `tend secret encrypt`"}
	}
	recipients := Recipients(tree)
	dataKey, err := tree.Metadata.GetDataKeyWithKeyServices(services(ids), nil)
	if err != nil {
		hint := "give tend an age identity for one of these recipients (--age-identity FILE, TEND_AGE_KEY, or the agent's Secret)"
		if ids.Len() > 0 {
			hint = fmt.Sprintf("tend has identities for %s, which are not recipients; re-encrypt the file for them (`tend secret rotate`) or give tend the right identity",
				strings.Join(ids.Recipients(), ", "))
		}
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: fmt.Sprintf("cannot decrypt: no identity for its recipients %s", strings.Join(recipients, ", ")), Hint: hint}
	}
	cipher := aes.NewCipher()
	mac, err := tree.Decrypt(dataKey, cipher)
	if err != nil {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "decrypt values: " + err.Error(), Hint: "the file was tampered with or corrupted; restore it from git history"}
	}
	fileMac, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, dataKey, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil || fileMac != mac {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "MAC mismatch: the file was changed after it was encrypted",
			Hint: "edit encrypted files only with `tend secret edit` or `sops`; restore it from git history"}
	}
	return store.EmitPlainFile(tree.Branches)
}

// Recipients lists the age recipients (and other key identifiers) of a tree.
func Recipients(tree sops.Tree) []string {
	var out []string
	for _, g := range tree.Metadata.KeyGroups {
		for _, k := range g {
			out = append(out, k.ToString())
		}
	}
	sort.Strings(out)
	return out
}

// Rule is what .sops.yaml says for a file.
type Rule struct {
	KeyGroups      []sops.KeyGroup
	Threshold      int
	EncryptedRegex string
}

// RuleFor finds the creation rule for path in the repository's .sops.yaml
// (searched from the file's directory upwards).
func RuleFor(path string) (*Rule, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	conf, err := config.FindConfigFile(abs)
	if err != nil {
		return nil, &model.Error{Origin: model.Origin{File: path}, Msg: "no .sops.yaml found above the file",
			Hint: "add .sops.yaml at the repository root with creation_rules: [{path_regex: ..., age: <recipient>}]"}
	}
	c, err := config.LoadCreationRuleForFile(conf, abs, nil)
	if err != nil || c == nil || len(c.KeyGroups) == 0 {
		msg := "no creation rule in " + conf + " matches the file"
		if err != nil && !strings.Contains(err.Error(), "no matching creation rules") {
			msg = fmt.Sprintf("%s: %s", conf, err)
		}
		return nil, &model.Error{Origin: model.Origin{File: path}, Msg: msg,
			Hint: "add a creation_rules entry whose path_regex matches this path, with the age recipients who may read it"}
	}
	re := c.EncryptedRegex
	if re == "" && c.UnencryptedRegex == "" && c.EncryptedSuffix == "" && c.UnencryptedSuffix == "" {
		re = DefaultEncryptedRegex
	}
	return &Rule{KeyGroups: c.KeyGroups, Threshold: c.ShamirThreshold, EncryptedRegex: re}, nil
}

// Encrypt encrypts plain YAML for the rule's recipients with a new data key.
func Encrypt(file string, plain []byte, r *Rule) ([]byte, error) {
	store := storeFor(file)
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "read YAML: " + err.Error(), Hint: "fix the YAML first"}
	}
	if len(branches) > 0 && store.HasSopsTopLevelKey(branches[0]) {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "already encrypted", Hint: "use `tend secret edit` or `tend secret rotate`"}
	}
	tree := sops.Tree{Branches: branches, Metadata: sops.Metadata{
		KeyGroups: r.KeyGroups, ShamirThreshold: r.Threshold, EncryptedRegex: r.EncryptedRegex, Version: version.Version,
	}}
	dataKey := make([]byte, 32)
	if _, err := rand.Read(dataKey); err != nil {
		return nil, err
	}
	if errs := tree.Metadata.UpdateMasterKeysWithKeyServices(dataKey, services(&Identities{})); len(errs) > 0 {
		return nil, fmt.Errorf("encrypt data key: %w", errors.Join(errs...))
	}
	if err := encryptTree(&tree, dataKey); err != nil {
		return nil, err
	}
	return store.EmitEncryptedFile(tree)
}

func encryptTree(tree *sops.Tree, dataKey []byte) error {
	cipher := aes.NewCipher()
	mac, err := tree.Encrypt(dataKey, cipher)
	if err != nil {
		return fmt.Errorf("encrypt values: %w", err)
	}
	tree.Metadata.LastModified = time.Now().UTC()
	tree.Metadata.MessageAuthenticationCode, err = cipher.Encrypt(mac, dataKey, tree.Metadata.LastModified.Format(time.RFC3339))
	return err
}

// Reencrypt re-encrypts an encrypted file for the recipients of rule, with
// a new data key. changed is false, and the file left as it was, when the
// recipients already match and rotate is false.
func Reencrypt(file string, data []byte, ids *Identities, r *Rule, rotate bool) ([]byte, bool, error) {
	store := storeFor(file)
	tree, err := store.LoadEncryptedFile(data)
	if err != nil {
		return nil, false, &model.Error{Origin: model.Origin{File: file}, Msg: "not a valid SOPS file: " + err.Error()}
	}
	want := recipientsOf(r.KeyGroups)
	if !rotate && strings.Join(Recipients(tree), ",") == strings.Join(want, ",") {
		return data, false, nil
	}
	plain, err := Decrypt(file, data, ids)
	if err != nil {
		return nil, false, err
	}
	regex := tree.Metadata.EncryptedRegex
	if regex == "" {
		regex = r.EncryptedRegex
	}
	out, err := Encrypt(file, plain, &Rule{KeyGroups: r.KeyGroups, Threshold: r.Threshold, EncryptedRegex: regex})
	return out, err == nil, err
}

func recipientsOf(groups []sops.KeyGroup) []string {
	var out []string
	for _, g := range groups {
		for _, k := range g {
			out = append(out, k.ToString())
		}
	}
	sort.Strings(out)
	return out
}

// AgeRule is a rule for the given age recipients, for tests and keygen.
func AgeRule(recipients ...string) (*Rule, error) {
	var g sops.KeyGroup
	for _, r := range recipients {
		mk, err := sopsage.MasterKeyFromRecipient(r)
		if err != nil {
			return nil, err
		}
		g = append(g, keys.MasterKey(mk))
	}
	return &Rule{KeyGroups: []sops.KeyGroup{g}, EncryptedRegex: DefaultEncryptedRegex}, nil
}
