// Package secret reads and writes SOPS-encrypted files with age keys, the
// format Flux users already have, through the getsops/sops library and
// filippo.io/age. Decryption happens in memory with identities tend was
// given (a file, an environment variable or a Kubernetes Secret), never the
// ambient SOPS environment, and a file is only ever decrypted whole: a bad
// MAC or a missing identity is an error, never ciphertext applied as data.
package secret

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/keyservice"

	"tend.dev/tend/internal/model"
)

// Identities are the age identities tend may decrypt with.
type Identities struct {
	parsed sopsage.ParsedIdentities
	// Sources says where they came from, for messages (never the keys).
	Sources []string
}

// Len is the number of identities.
func (ids *Identities) Len() int {
	if ids == nil {
		return 0
	}
	return len(ids.parsed)
}

// Add parses identities in age's text format (AGE-SECRET-KEY-1… lines).
func (ids *Identities) Add(source string, text []byte) error {
	parsed, err := age.ParseIdentities(bytes.NewReader(text))
	if err != nil {
		return model.WithHint(fmt.Errorf("read age identities from %s: %v", source, redactKeys(err.Error())),
			"the file must hold AGE-SECRET-KEY-1… lines, as `tend secret keygen` writes")
	}
	for _, p := range parsed {
		ids.parsed = append(ids.parsed, p)
	}
	ids.Sources = append(ids.Sources, source)
	return nil
}

// Warning is a non-fatal finding, such as loose file permissions.
type Warning string

// LoadFile reads identities from a file and warns when other users may
// read it.
func (ids *Identities) LoadFile(path string) (Warning, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", model.WithHint(fmt.Errorf("age identity file: %w", err), "create one with `tend secret keygen --out FILE`")
	}
	var warn Warning
	if st.Mode().Perm()&0o077 != 0 {
		warn = Warning(fmt.Sprintf("age identity file %s has mode %04o: other users may read it; run chmod 600 %s", path, st.Mode().Perm(), path))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return warn, err
	}
	return warn, ids.Add(path, data)
}

// Recipients returns the public recipients of the identities.
func (ids *Identities) Recipients() []string {
	var out []string
	for _, p := range ids.parsed {
		if x, ok := p.(*age.X25519Identity); ok {
			out = append(out, x.Recipient().String())
		}
	}
	return out
}

func redactKeys(s string) string {
	if i := strings.Index(s, "AGE-SECRET-KEY-"); i >= 0 {
		return s[:i] + "AGE-SECRET-KEY-…"
	}
	return s
}

// keyService decrypts and encrypts age data keys with our identities
// instead of the ambient SOPS_AGE_KEY* environment; other key types go to
// sops' default key service.
type keyService struct {
	ids  *Identities
	next keyservice.Server
}

func (k keyService) Encrypt(ctx context.Context, req *keyservice.EncryptRequest) (*keyservice.EncryptResponse, error) {
	if a := req.Key.GetAgeKey(); a != nil {
		mk, err := sopsage.MasterKeyFromRecipient(a.Recipient)
		if err != nil {
			return nil, err
		}
		if err := mk.Encrypt(req.Plaintext); err != nil {
			return nil, err
		}
		return &keyservice.EncryptResponse{Ciphertext: mk.EncryptedDataKey()}, nil
	}
	return k.next.Encrypt(ctx, req)
}

func (k keyService) Decrypt(ctx context.Context, req *keyservice.DecryptRequest) (*keyservice.DecryptResponse, error) {
	if a := req.Key.GetAgeKey(); a != nil {
		// With no identities sops would fall back to the ambient
		// SOPS_AGE_KEY*, ~/.config/sops/age/keys.txt and even ~/.ssh keys:
		// tend decrypts only with the identities it was given.
		if k.ids.Len() == 0 {
			return nil, errors.New("no identity given")
		}
		mk := &sopsage.MasterKey{Recipient: a.Recipient}
		mk.SetEncryptedDataKey(req.Ciphertext)
		k.ids.parsed.ApplyToMasterKey(mk)
		plain, err := mk.Decrypt()
		if err != nil {
			return nil, errors.New("no identity matches")
		}
		return &keyservice.DecryptResponse{Plaintext: plain}, nil
	}
	return k.next.Decrypt(ctx, req)
}

func (ids *Identities) services() []keyservice.KeyServiceClient {
	return []keyservice.KeyServiceClient{keyservice.NewCustomLocalClient(keyService{ids: ids})}
}
