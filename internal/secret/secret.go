// Package secret reads and writes SOPS-encrypted files with age keys, the
// format Flux users already have, through the getsops/sops library and
// filippo.io/age. Decryption happens in memory with identities tend was
// given (a file, an environment variable or a Kubernetes Secret), never the
// ambient SOPS environment, and a file is only ever decrypted whole: a bad
// MAC or a missing identity is an error, never ciphertext applied as data.
package secret

import (
	"context"
	"errors"

	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/keyservice"

	"tend.dev/tend/internal/secret/unseal"
)

// Identities are the age identities tend may decrypt with. They live in
// package unseal, which the machine agent links instead of this one.
type Identities = unseal.Identities

// Warning is a non-fatal finding, such as loose file permissions.
type Warning = unseal.Warning

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
		sopsage.ParsedIdentities(k.ids.Age()).ApplyToMasterKey(mk)
		plain, err := mk.Decrypt()
		if err != nil {
			return nil, errors.New("no identity matches")
		}
		return &keyservice.DecryptResponse{Plaintext: plain}, nil
	}
	return k.next.Decrypt(ctx, req)
}

func services(ids *Identities) []keyservice.KeyServiceClient {
	return []keyservice.KeyServiceClient{keyservice.NewCustomLocalClient(keyService{ids: ids})}
}
