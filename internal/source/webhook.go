package source

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // GitHub's legacy X-Hub-Signature, checked only when sha256 is absent
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
)

// Webhook receives push notifications from GitHub, GitLab, Gitea and generic
// senders and calls Trigger, so the agent fetches at once instead of at the
// next poll. Every request must prove it knows the shared secret: an HMAC
// of the body (GitHub, Gitea, generic X-Signature), or the token itself
// (GitLab's X-Gitlab-Token, or a Bearer token). Anything else is refused
// with 401 (no proof) or 403 (wrong proof), and triggers nothing.
type Webhook struct {
	Secret  []byte
	Trigger func(sender string)
	// MaxBody bounds the payload read (default 5 MiB).
	MaxBody int64
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	limit := h.MaxBody
	if limit == 0 {
		limit = 5 << 20
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil || int64(len(body)) > limit {
		http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
		return
	}
	sender, status := h.verify(r, body)
	if status != http.StatusOK {
		http.Error(w, http.StatusText(status), status)
		return
	}
	if isPing(r) {
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Trigger(sender)
	w.WriteHeader(http.StatusAccepted)
}

func isPing(r *http.Request) bool {
	return r.Header.Get("X-GitHub-Event") == "ping"
}

// verify returns the sender and 200, or 401/403.
func (h *Webhook) verify(r *http.Request, body []byte) (string, int) {
	if len(h.Secret) == 0 {
		return "", http.StatusForbidden // never accept unauthenticated triggers
	}
	sigOK := func(header string, mac func() []byte, prefix string) int {
		got := strings.TrimPrefix(header, prefix)
		want := hex.EncodeToString(mac())
		if subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) == 1 {
			return http.StatusOK
		}
		return http.StatusForbidden
	}
	hmac256 := func() []byte { m := hmac.New(sha256.New, h.Secret); m.Write(body); return m.Sum(nil) }
	hmac1 := func() []byte { m := hmac.New(sha1.New, h.Secret); m.Write(body); return m.Sum(nil) }
	switch {
	case r.Header.Get("X-Hub-Signature-256") != "":
		return "github", sigOK(r.Header.Get("X-Hub-Signature-256"), hmac256, "sha256=")
	case r.Header.Get("X-Hub-Signature") != "":
		return "github", sigOK(r.Header.Get("X-Hub-Signature"), hmac1, "sha1=")
	case r.Header.Get("X-Gitea-Signature") != "":
		return "gitea", sigOK(r.Header.Get("X-Gitea-Signature"), hmac256, "")
	case r.Header.Get("X-Gitlab-Token") != "":
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Gitlab-Token")), h.Secret) == 1 {
			return "gitlab", http.StatusOK
		}
		return "gitlab", http.StatusForbidden
	case r.Header.Get("X-Signature") != "":
		return "generic", sigOK(r.Header.Get("X-Signature"), hmac256, "sha256=")
	case strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
		if subtle.ConstantTimeCompare([]byte(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")), h.Secret) == 1 {
			return "generic", http.StatusOK
		}
		return "generic", http.StatusForbidden
	}
	return "", http.StatusUnauthorized
}
