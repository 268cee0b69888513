package gogit

import (
	"context"
	"errors"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"

	"tend.dev/tend/internal/source"
)

// CanPush reports whether opts' credentials (or none) may push to rawURL.
// It asks for the receive-pack advertisement, the first step of a push,
// which a forge or git http-backend grants only to those who may write;
// nothing is pushed. Machines must hold read-only credentials: a machine
// that can push can change what every other machine runs.
func CanPush(ctx context.Context, rawURL string, opts source.Options) (bool, error) {
	if !strings.HasPrefix(rawURL, "http://") && !strings.HasPrefix(rawURL, "https://") && !strings.HasPrefix(rawURL, "ssh://") {
		return false, errors.New("only http(s) and ssh remotes can be checked")
	}
	auth, err := authFor(rawURL, opts)
	if err != nil {
		return false, err
	}
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return false, err
	}
	cl, err := client.NewClient(ep)
	if err != nil {
		return false, err
	}
	s, err := cl.NewReceivePackSession(ep, auth)
	if err == nil {
		defer s.Close()
		_, err = s.AdvertisedReferencesContext(ctx)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, transport.ErrAuthorizationFailed), errors.Is(err, transport.ErrAuthenticationRequired),
		strings.Contains(err.Error(), "403"), strings.Contains(err.Error(), "unable to authenticate"):
		return false, nil
	}
	return false, err
}
