// Package backup runs the Backups of an ops repository on the targets that
// hold the data: each node agent backs up its own machine, a cluster's
// leader agent backs up the cluster's objects. There is no central
// scheduler: a target computes from the schedule and its own state file
// when a run is due, so a run missed while the agent was down happens at
// the next start.
//
// Snapshots are stored in restic repositories (package backup/restic), so
// a user can list and restore them with restic's own CLI when tend is gone.
// The schedule and retention computations here are pure; only Runner does
// I/O.
package backup

import (
	"fmt"
	"hash/fnv"
	"time"

	"tend.dev/tend/internal/model"
)

// Jitter is target's fixed delay within s.Jitter: derived from the name,
// so it is the same on every run and spreads targets over the window.
func Jitter(s model.Schedule, target string) time.Duration {
	if s.Jitter.Duration <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(target))
	return time.Duration(h.Sum64() % uint64(s.Jitter.Duration))
}

// Next returns the first run time of target strictly after t: the next
// cron slot in the schedule's time zone, plus the target's jitter.
func Next(s model.Schedule, t time.Time, target string) (time.Time, error) {
	sched, err := model.CronParser.Parse(s.Cron)
	if err != nil {
		return time.Time{}, fmt.Errorf("schedule %q: %w", s.Cron, err)
	}
	loc, err := s.Location()
	if err != nil {
		return time.Time{}, err
	}
	j := Jitter(s, target)
	// The slot itself is what cron computes; the jitter only shifts when
	// it runs, so a slot is found from t minus the jitter.
	slot := sched.Next(t.Add(-j).In(loc))
	if slot.IsZero() {
		return time.Time{}, fmt.Errorf("schedule %q never fires", s.Cron)
	}
	return slot.Add(j), nil
}

// Due reports whether a run of target is due at now, given the time the
// last run was due (zero when it never ran; since is then when the target
// first saw the backup, so a new Backup waits for its first slot). It
// returns the newest due time in (last, now]: runs missed while the agent
// was down collapse into one run at the next start.
func Due(s model.Schedule, last, since, now time.Time, target string) (at time.Time, due bool, err error) {
	from := last
	if from.IsZero() {
		from = since
	}
	next, err := Next(s, from, target)
	if err != nil || next.After(now) {
		return time.Time{}, false, err
	}
	// Skip forward to the newest slot that is due: bounded, since a
	// schedule of every minute over a year down is 525,600 steps.
	for i := 0; i < 1_000_000; i++ {
		n, err := Next(s, next, target)
		if err != nil || n.After(now) {
			break
		}
		next = n
	}
	return next, true, nil
}

// Task is a run that is due.
type Task struct {
	Backup  *model.Backup
	Kind    Kind
	Trigger Trigger
	// Slot is the schedule time the run is for.
	Slot time.Time
}

// DueTasks returns the backups and drills of target due at now, given its
// state: backups first, so a drill checks the newest snapshot. A slot
// before started (when the agent started) was missed while it was down.
// It records a Backup it sees for the first time in st, which the caller
// persists.
func DueTasks(backups []*model.Backup, st *State, now, started time.Time, target string) []Task {
	var runs, drills []Task
	for _, b := range backups {
		rec := st.Record(b.Metadata.Name, now)
		trigger := func(slot time.Time) Trigger {
			if slot.Before(started) {
				return Missed
			}
			return Scheduled
		}
		if slot, due, err := Due(b.Spec.Schedule, rec.Slot, rec.Since, now, target); err == nil && due {
			runs = append(runs, Task{Backup: b, Kind: KindBackup, Trigger: trigger(slot), Slot: slot})
		}
		if v := b.Spec.Verify; v != nil {
			if slot, due, err := Due(v.Schedule, rec.VerifySlot, rec.Since, now, target); err == nil && due {
				drills = append(drills, Task{Backup: b, Kind: KindVerify, Trigger: trigger(slot), Slot: slot})
			}
		}
	}
	return append(runs, drills...)
}

// NextRun returns when the next task of target is due, after now.
func NextRun(backups []*model.Backup, st *State, now time.Time, target string) time.Time {
	var next time.Time
	consider := func(s model.Schedule, last, since time.Time) {
		from := last
		if from.IsZero() {
			from = since
		}
		if from.IsZero() || from.Before(now) {
			from = now
		}
		if t, err := Next(s, from, target); err == nil && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, b := range backups {
		rec := st.Backups[b.Metadata.Name]
		if rec == nil {
			rec = &Record{Since: now}
		}
		consider(b.Spec.Schedule, rec.Slot, rec.Since)
		if v := b.Spec.Verify; v != nil {
			consider(v.Schedule, rec.VerifySlot, rec.Since)
		}
	}
	return next
}
