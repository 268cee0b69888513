package backup

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Kind is what a run did.
type Kind string

// Run kinds.
const (
	KindBackup  Kind = "backup"
	KindVerify  Kind = "verify"
	KindRestore Kind = "restore"
)

// Result is how a run ended.
type Result string

// Results.
const (
	Succeeded Result = "succeeded"
	Failed    Result = "failed"
)

// Trigger is why a run started.
type Trigger string

// Triggers.
const (
	// Scheduled runs at its slot; Missed runs a slot that passed while the
	// agent was down; Before runs ahead of a change (backupBefore);
	// Manual is `tend backup run`.
	Scheduled Trigger = "schedule"
	Missed    Trigger = "missed"
	Before    Trigger = "backupBefore"
	Manual    Trigger = "manual"
)

// Run is one backup, drill or restore, as status, `tend backup list` and
// metrics show it. It never holds a secret: errors come from restic with
// credentials scrubbed.
type Run struct {
	Backup   string        `json:"backup"`
	Kind     Kind          `json:"kind"`
	Trigger  Trigger       `json:"trigger,omitempty"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Result   Result        `json:"result"`
	Snapshot string        `json:"snapshot,omitempty"`
	// Bytes is what the snapshot holds; Added what this run uploaded.
	Bytes int64 `json:"bytes,omitempty"`
	Added int64 `json:"added,omitempty"`
	Files int64 `json:"files,omitempty"`
	// Pruned counts snapshots the retention policy removed after this run.
	Pruned int `json:"pruned,omitempty"`
	// Note is something worth knowing about a run that succeeded.
	Note  string `json:"note,omitempty"`
	Error string `json:"error,omitempty"`
	Hint  string `json:"hint,omitempty"`
}

// Record is the state of one Backup on one target.
type Record struct {
	// Since is when this target first saw the Backup: a new Backup waits
	// for its first slot instead of running at once.
	Since time.Time `json:"since"`
	// Slot and VerifySlot are the schedule times last run.
	Slot       time.Time `json:"slot,omitzero"`
	VerifySlot time.Time `json:"verifySlot,omitzero"`
	// BeforeRevision is the revision a backupBefore backup last ran for.
	BeforeRevision string `json:"beforeRevision,omitempty"`
	Last           *Run   `json:"last,omitempty"`
	LastSuccess    *Run   `json:"lastSuccess,omitempty"`
	LastVerify     *Run   `json:"lastVerify,omitempty"`
	// History is the newest runs, newest last, at most HistoryLen.
	History []Run `json:"history,omitempty"`
}

// HistoryLen bounds the runs kept per Backup.
const HistoryLen = 20

// State is every Backup's record on one target.
type State struct {
	Backups map[string]*Record `json:"backups"`
}

// Record returns the record of name, created with since when new.
func (s *State) Record(name string, since time.Time) *Record {
	if s.Backups == nil {
		s.Backups = map[string]*Record{}
	}
	r := s.Backups[name]
	if r == nil {
		r = &Record{Since: since}
		s.Backups[name] = r
	}
	return r
}

// Add records a finished run.
func (r *Record) Add(run Run) {
	switch run.Kind {
	case KindBackup:
		r.Last = &run
		if run.Result == Succeeded {
			r.LastSuccess = &run
		}
	case KindVerify:
		r.LastVerify = &run
	}
	r.History = append(r.History, run)
	if n := len(r.History); n > HistoryLen {
		r.History = append([]Run(nil), r.History[n-HistoryLen:]...)
	}
}

// Forget drops the records of backups no longer in keep.
func (s *State) Forget(keep map[string]bool) {
	for name := range s.Backups {
		if !keep[name] {
			delete(s.Backups, name)
		}
	}
}

// Names returns the recorded backups, sorted.
func (s *State) Names() []string {
	var out []string
	for n := range s.Backups {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// StateFile is where a machine's state lives under its state dir.
func StateFile(dir string) string { return filepath.Join(dir, "backups.json") }

// ReadState reads a state file; a missing file is an empty state.
func ReadState(file string) (*State, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return &s, nil
}

// WriteState writes s atomically.
func WriteState(file string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}
