// Package notify posts reconcile outcomes (applied, failed, drift corrected,
// pruned) to webhooks: a generic JSON payload, or a Slack-compatible one.
// Delivery retries with exponential backoff on its own goroutines and never
// blocks reconciliation: when the queue is full the oldest event is dropped
// and counted.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one reconcile outcome.
type Event struct {
	Cluster   string    `json:"cluster"`
	Component string    `json:"component"`
	Revision  string    `json:"revision"`
	Outcome   string    `json:"outcome"` // applied, failed, drift, pruned
	Message   string    `json:"message"`
	Time      time.Time `json:"time"`
}

// Target is one receiver.
type Target struct {
	URL string
	// Slack sends {"text": …} instead of the Event as JSON.
	Slack bool
}

// Notifier delivers events to targets.
type Notifier struct {
	Targets []Target
	Client  *http.Client
	// Attempts per event and target (default 5), backoff from Backoff
	// (default 1s) doubling up to 30s.
	Attempts int
	Backoff  time.Duration

	queue   chan Event
	once    sync.Once
	Dropped atomic.Int64
	Failed  atomic.Int64
}

func (n *Notifier) init() {
	n.once.Do(func() {
		n.queue = make(chan Event, 1024)
		if n.Client == nil {
			n.Client = &http.Client{Timeout: 10 * time.Second}
		}
		if n.Attempts == 0 {
			n.Attempts = 5
		}
		if n.Backoff == 0 {
			n.Backoff = time.Second
		}
	})
}

// Notify queues e and returns at once.
func (n *Notifier) Notify(e Event) {
	if n == nil || len(n.Targets) == 0 {
		return
	}
	n.init()
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	for {
		select {
		case n.queue <- e:
			return
		default:
			select {
			case <-n.queue:
				n.Dropped.Add(1)
			default:
			}
		}
	}
}

// Start delivers queued events until ctx ends.
func (n *Notifier) Start(ctx context.Context) {
	n.init()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-n.queue:
				for _, t := range n.Targets {
					if err := n.deliver(ctx, t, e); err != nil {
						n.Failed.Add(1)
					}
				}
			}
		}
	}()
}

func (n *Notifier) deliver(ctx context.Context, t Target, e Event) error {
	var body []byte
	if t.Slack {
		icon := map[string]string{"applied": ":white_check_mark:", "failed": ":x:", "drift": ":warning:", "pruned": ":wastebasket:"}[e.Outcome]
		body, _ = json.Marshal(map[string]string{"text": fmt.Sprintf("%s *%s/%s* %s at `%s`: %s", icon, e.Cluster, e.Component, e.Outcome, e.Revision, e.Message)})
	} else {
		body, _ = json.Marshal(e)
	}
	wait := n.Backoff
	var last error
	for attempt := 1; attempt <= n.Attempts; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "tend")
		resp, err := n.Client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return nil
			}
			last = fmt.Errorf("%s answered %s", t.URL, resp.Status)
			if resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
				return last // a client error will not get better
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
	return last
}
