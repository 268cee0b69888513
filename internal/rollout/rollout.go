// Package rollout bounds how many machines of a pool are in a disruptive
// change at once, without a central server.
//
// The pool's coordinator machine (the first, unless the pool names one)
// keeps the slots in a file, changed under flock. Every other machine's
// agent takes and releases a slot over SSH, as the user tend-slots, with a
// key of its own that authorized_keys restricts to one forced command
// naming the machine: an agent can neither run anything else there nor
// act for another machine. A machine that fails its health check keeps
// its slot, so the rollout stops until it is healthy or an operator frees
// the slot (`tend machines release`).
package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Holder is a machine holding a slot.
type Holder struct {
	Machine string    `json:"machine"`
	Since   time.Time `json:"since"`
	// Reason says what the machine is doing, or why it still holds the
	// slot ("health check failed: …").
	Reason string `json:"reason,omitempty"`
}

// Slots is the state of one pool's slots.
type Slots struct {
	Pool    string   `json:"pool"`
	Holders []Holder `json:"holders"`
}

// Grant is the answer to an acquire.
type Grant struct {
	Granted bool     `json:"granted"`
	Holders []Holder `json:"holders"`
}

// Store keeps slots in Dir, one file per pool.
type Store struct{ Dir string }

// DefaultDir is where the coordinator keeps the slots.
const DefaultDir = "/var/lib/tend-slots"

func (s Store) file(pool string) string { return filepath.Join(s.Dir, pool+".json") }

// update runs fn on the pool's slots under an exclusive lock and saves them.
func (s Store) update(pool string, fn func(*Slots) error) (*Slots, error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(s.file(pool)+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	s.own(s.file(pool) + ".lock")
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	st := &Slots{Pool: pool}
	if b, err := os.ReadFile(s.file(pool)); err == nil {
		if err := json.Unmarshal(b, st); err != nil {
			return nil, fmt.Errorf("read slots of %s: %w", pool, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := fn(st); err != nil {
		return st, err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := s.file(pool) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return nil, err
	}
	s.own(tmp)
	return st, os.Rename(tmp, s.file(pool))
}

// own gives a file to the owner of the directory: the coordinator's own
// agent runs as root, the others arrive as the slot user, and both must
// read and write the same files.
func (s Store) own(path string) {
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(s.Dir)
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		os.Chown(path, int(st.Uid), int(st.Gid))
	}
}

// Acquire gives machine a slot when it holds one already or fewer than max
// are taken. Pure over the slots: see Store.Acquire for the locked form.
func Acquire(st *Slots, machine string, max int, reason string, now time.Time) bool {
	for i, h := range st.Holders {
		if h.Machine == machine {
			st.Holders[i].Reason = reason
			return true
		}
	}
	if len(st.Holders) >= max {
		return false
	}
	st.Holders = append(st.Holders, Holder{Machine: machine, Since: now, Reason: reason})
	sort.Slice(st.Holders, func(i, j int) bool { return st.Holders[i].Since.Before(st.Holders[j].Since) })
	return true
}

// Acquire takes a slot for machine.
func (s Store) Acquire(pool, machine string, max int, reason string) (Grant, error) {
	var g Grant
	st, err := s.update(pool, func(st *Slots) error {
		had := holds(st, machine)
		g.Granted = Acquire(st, machine, max, reason, time.Now().UTC())
		if g.Granted && !had {
			s.record(pool, "acquire", machine)
		}
		return nil
	})
	if err != nil {
		return g, err
	}
	g.Holders = st.Holders
	return g, nil
}

// Note updates the reason of a slot machine holds (a failed health check).
func (s Store) Note(pool, machine, reason string) error {
	_, err := s.update(pool, func(st *Slots) error {
		for i := range st.Holders {
			if st.Holders[i].Machine == machine && st.Holders[i].Reason != reason {
				st.Holders[i].Reason = reason
				s.record(pool, "note", machine+" "+strings.Join(strings.Fields(reason), " "))
			}
		}
		return nil
	})
	return err
}

// Release frees machine's slot, if it holds one.
func (s Store) Release(pool, machine string) error {
	_, err := s.update(pool, func(st *Slots) error {
		if holds(st, machine) {
			s.record(pool, "release", machine)
		}
		out := st.Holders[:0]
		for _, h := range st.Holders {
			if h.Machine != machine {
				out = append(out, h)
			}
		}
		st.Holders = out
		return nil
	})
	return err
}

func holds(st *Slots, machine string) bool {
	for _, h := range st.Holders {
		if h.Machine == machine {
			return true
		}
	}
	return false
}

// record appends to the pool's history, under the lock: the audit trail of
// who was in a disruptive change when.
func (s Store) record(pool, event, machine string) {
	f, err := os.OpenFile(filepath.Join(s.Dir, pool+".history"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	s.own(f.Name())
	fmt.Fprintf(f, "%s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), event, machine)
	f.Close()
}

// List returns the holders of pool's slots.
func (s Store) List(pool string) (*Slots, error) {
	return s.update(pool, func(*Slots) error { return nil })
}

// Serve answers one command of an agent that reached the coordinator over
// SSH. command is SSH_ORIGINAL_COMMAND: "acquire MAX [REASON…]", "note
// REASON…", "release" or "list"; machine comes from the forced command in
// authorized_keys, never from the caller. The answer is JSON.
func (s Store) Serve(pool, machine, command string) ([]byte, error) {
	f := strings.Fields(command)
	if len(f) == 0 {
		return nil, errors.New("no command; expected acquire, note, release or list")
	}
	rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(command), f[0]))
	switch f[0] {
	case "acquire":
		if len(f) < 2 {
			return nil, errors.New("acquire needs MAX")
		}
		var max int
		if _, err := fmt.Sscanf(f[1], "%d", &max); err != nil || max < 1 {
			return nil, fmt.Errorf("acquire: bad MAX %q", f[1])
		}
		reason := strings.TrimSpace(strings.TrimPrefix(rest, f[1]))
		g, err := s.Acquire(pool, machine, max, reason)
		if err != nil {
			return nil, err
		}
		return json.Marshal(g)
	case "note":
		if err := s.Note(pool, machine, rest); err != nil {
			return nil, err
		}
		return []byte(`{}`), nil
	case "release":
		if err := s.Release(pool, machine); err != nil {
			return nil, err
		}
		return []byte(`{}`), nil
	case "list":
		st, err := s.List(pool)
		if err != nil {
			return nil, err
		}
		return json.Marshal(st)
	}
	return nil, fmt.Errorf("unknown command %q; expected acquire, note, release or list", f[0])
}
