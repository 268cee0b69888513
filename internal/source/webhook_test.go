package source

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func TestWebhook(t *testing.T) {
	const secret, body = "topsecret", `{"ref":"refs/heads/main"}`
	tests := []struct {
		name    string
		headers map[string]string
		want    int
		sender  string
	}{
		{"github", map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, body), "X-GitHub-Event": "push"}, 202, "github"},
		{"github ping triggers nothing", map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, body), "X-GitHub-Event": "ping"}, 200, ""},
		{"github wrong signature", map[string]string{"X-Hub-Signature-256": "sha256=" + sign("wrong", body)}, 403, ""},
		{"gitea", map[string]string{"X-Gitea-Signature": sign(secret, body)}, 202, "gitea"},
		{"gitea wrong signature", map[string]string{"X-Gitea-Signature": sign(secret, body+" ")}, 403, ""},
		{"gitlab token", map[string]string{"X-Gitlab-Token": secret}, 202, "gitlab"},
		{"gitlab wrong token", map[string]string{"X-Gitlab-Token": "guess"}, 403, ""},
		{"generic hmac", map[string]string{"X-Signature": "sha256=" + sign(secret, body)}, 202, "generic"},
		{"generic bearer", map[string]string{"Authorization": "Bearer " + secret}, 202, "generic"},
		{"generic wrong bearer", map[string]string{"Authorization": "Bearer nope"}, 403, ""},
		{"no proof at all", nil, 401, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			h := &Webhook{Secret: []byte(secret), Trigger: func(s string) { got = s }}
			req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want || got != tc.sender {
				t.Fatalf("status %d sender %q, want %d %q", rec.Code, got, tc.want, tc.sender)
			}
		})
	}
	h := &Webhook{Trigger: func(string) { t.Fatal("triggered without a configured secret") }}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body)))
	if rec.Code != 403 {
		t.Fatalf("no secret configured: %d", rec.Code)
	}
}
