package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetryAndPayloads(t *testing.T) {
	var calls atomic.Int32
	got := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
	}))
	defer srv.Close()
	slack := make(chan string, 1)
	ssrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		slack <- string(b)
	}))
	defer ssrv.Close()
	n := &Notifier{Targets: []Target{{URL: srv.URL}, {URL: ssrv.URL, Slack: true}}, Backoff: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.Start(ctx)
	n.Notify(Event{Cluster: "prod", Component: "web", Revision: "main@sha1:abc", Outcome: "drift", Message: "ConfigMap/web/cfg reverted"})
	select {
	case b := <-got:
		var e Event
		if err := json.Unmarshal([]byte(b), &e); err != nil || e.Outcome != "drift" || e.Component != "web" {
			t.Fatalf("payload %s: %v", b, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not delivered after retries")
	}
	if calls.Load() != 3 {
		t.Errorf("%d calls, want 2 failures then success", calls.Load())
	}
	select {
	case b := <-slack:
		if !strings.Contains(b, `"text":":warning: *prod/web* drift`) {
			t.Errorf("slack payload %s", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slack not delivered")
	}
}

func TestNeverBlocks(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	n := &Notifier{Targets: []Target{{URL: srv.URL}}}
	n.Start(context.Background())
	t0 := time.Now()
	for range 5000 {
		n.Notify(Event{Outcome: "applied"})
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("Notify blocked for %s against a hung receiver", d)
	}
	if n.Dropped.Load() == 0 {
		t.Error("a full queue must drop the oldest events, and count them")
	}
}
