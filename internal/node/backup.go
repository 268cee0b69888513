package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret/unseal"
)

// BackupStatus is one Backup of this machine, as status shows it.
type BackupStatus struct {
	Name        string      `json:"name"`
	Last        *backup.Run `json:"last,omitempty"`
	LastSuccess *time.Time  `json:"lastSuccess,omitempty"`
	LastVerify  *backup.Run `json:"lastVerify,omitempty"`
	Next        time.Time   `json:"next,omitzero"`
}

// backupSet is what the backup scheduler needs of the newest revision.
type backupSet struct {
	root     string
	revision string
	backups  []*model.Backup
	ids      *unseal.Identities
	pool     *model.MachinePool
	before   string // the machine state's backupBefore
}

// backups is the agent's backup side: a scheduler goroutine, and the
// lock that keeps it, backupBefore and `tend node backup` apart.
type backups struct {
	mu      sync.Mutex
	set     *backupSet
	wake    chan struct{}
	started time.Time
}

func (a *Agent) haveRestic() bool {
	bin := a.Restic
	if bin == "" {
		bin = "restic"
	}
	_, err := exec.LookPath(bin)
	return err == nil
}

func (a *Agent) backupDir() string { return filepath.Join(a.Config.StateDir, "backup") }

func (a *Agent) backupStateFile() string { return backup.StateFile(a.Config.StateDir) }

// BackupRunner returns the backup runner of this machine at p's revision.
func (a *Agent) BackupRunner(p *Prepared) *backup.Runner {
	return a.Runner(p.Root, p.identities, p.Pool)
}

// Runner returns the backup runner of this machine for the repository
// checked out at root.
func (a *Agent) Runner(root string, ids *unseal.Identities, pool *model.MachinePool) *backup.Runner {
	return &backup.Runner{Target: a.Config.Machine, Restic: a.Restic, Dir: a.backupDir(), Root: root,
		Decrypt: func(file string, data []byte) ([]byte, error) { return unseal.Decrypt(file, data, ids) },
		// Of the machines sharing a Backup's repository, the first creates it.
		Initializes: func(b *model.Backup) bool {
			t := b.Targets(pool)
			return len(t) == 0 || t[0] == a.Config.Machine
		}}
}

// LockBackups serializes backup runs and their state between the agent
// and `tend node backup` commands run by hand: an flock on the state dir.
func (a *Agent) LockBackups() (func(), error) {
	if err := os.MkdirAll(a.Config.StateDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(a.Config.StateDir, "backups.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// RunBackup runs task now under the lock and records it.
func (a *Agent) RunBackup(ctx context.Context, p *Prepared, task backup.Task) (backup.Run, error) {
	unlock, err := a.LockBackups()
	if err != nil {
		return backup.Run{}, err
	}
	defer unlock()
	st, err := backup.ReadState(a.backupStateFile())
	if err != nil {
		return backup.Run{}, err
	}
	run := a.runTask(ctx, a.BackupRunner(p), st, task)
	return run, backup.WriteState(a.backupStateFile(), st)
}

func (a *Agent) runTask(ctx context.Context, r *backup.Runner, st *backup.State, t backup.Task) backup.Run {
	run := r.Do(ctx, st, t)
	if a.OnBackup != nil {
		a.OnBackup(t.Backup, run)
	}
	return run
}

// setBackups hands the newest revision's backups to the scheduler.
func (a *Agent) setBackups(p *Prepared) {
	a.bk.mu.Lock()
	a.bk.set = &backupSet{root: p.Root, revision: p.Revision, backups: p.Backups, ids: p.identities, pool: p.Pool,
		before: p.Pool.StateFor(p.Machine).BackupBefore}
	a.bk.mu.Unlock()
	select {
	case a.bk.wake <- struct{}{}:
	default:
	}
}

// backupLoop runs the machine's backups and drills when they are due,
// beside the converge loop: a long backup does not hold up drift
// correction.
func (a *Agent) backupLoop(ctx context.Context) {
	for {
		wait := a.backupTick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-a.bk.wake:
		}
	}
}

// backupTick runs what is due and returns how long to sleep. An idle
// tick reads the state file and writes nothing.
func (a *Agent) backupTick(ctx context.Context) time.Duration {
	a.bk.mu.Lock()
	set := a.bk.set
	a.bk.mu.Unlock()
	if set == nil {
		return time.Minute
	}
	unlock, err := a.LockBackups()
	if err != nil {
		return time.Minute
	}
	defer unlock()
	st, err := backup.ReadState(a.backupStateFile())
	if err != nil {
		return time.Minute
	}
	before := len(st.Backups)
	keep := map[string]bool{}
	for _, b := range set.backups {
		keep[b.Metadata.Name] = true
	}
	st.Forget(keep)
	changed := len(st.Backups) != before
	tasks := backup.DueTasks(set.backups, st, time.Now(), a.bk.started, a.Config.Machine)
	changed = changed || len(st.Backups) != before
	r := a.Runner(set.root, set.ids, set.pool)
	for _, t := range tasks {
		a.runTask(ctx, r, st, t)
		backup.WriteState(a.backupStateFile(), st) //nolint:errcheck // written again after the next run
		changed = false
	}
	if changed {
		backup.WriteState(a.backupStateFile(), st) //nolint:errcheck // a new Backup's first sighting; seen again next tick
	}
	next := backup.NextRun(set.backups, st, time.Now(), a.Config.Machine)
	if next.IsZero() {
		return time.Minute
	}
	return min(max(time.Until(next), time.Second), time.Minute)
}

// backupBefore runs the machine state's backupBefore backup once per new
// revision, before its changes are applied. It returns an error when the
// backup failed: the changes then wait.
func (a *Agent) backupBefore(ctx context.Context, p *Prepared) error {
	name := p.Pool.StateFor(p.Machine).BackupBefore
	if name == "" {
		return nil
	}
	var b *model.Backup
	for _, x := range p.Backups {
		if x.Metadata.Name == name {
			b = x
		}
	}
	if b == nil {
		return model.WithHint(fmt.Errorf("backupBefore %q is not a Backup of this machine", name), "name a Backup whose spec.machines lists this machine")
	}
	st, err := backup.ReadState(a.backupStateFile())
	if err == nil {
		if rec := st.Backups[name]; rec != nil && rec.BeforeRevision == p.Revision && rec.Last != nil && rec.Last.Result == backup.Succeeded {
			return nil
		}
	}
	unlock, err := a.LockBackups()
	if err != nil {
		return err
	}
	defer unlock()
	if st, err = backup.ReadState(a.backupStateFile()); err != nil {
		return err
	}
	run := a.runTask(ctx, a.BackupRunner(p), st, backup.Task{Backup: b, Kind: backup.KindBackup, Trigger: backup.Before})
	if run.Result == backup.Succeeded {
		st.Record(name, time.Now()).BeforeRevision = p.Revision
	}
	if err := backup.WriteState(a.backupStateFile(), st); err != nil {
		return err
	}
	if run.Result != backup.Succeeded {
		return &model.HintError{Err: fmt.Errorf("backup %s before the change failed: %s", name, run.Error),
			Hint: "the new revision's changes wait until the backup succeeds; " + run.Hint}
	}
	return nil
}

// backupStatus summarizes the machine's backups for status.
func (a *Agent) backupStatus(p *Prepared) []BackupStatus {
	if len(p.Backups) == 0 {
		return nil
	}
	st, err := backup.ReadState(a.backupStateFile())
	if err != nil {
		st = &backup.State{}
	}
	var out []BackupStatus
	now := time.Now()
	for _, b := range p.Backups {
		bs := BackupStatus{Name: b.Metadata.Name}
		if rec := st.Backups[b.Metadata.Name]; rec != nil {
			bs.Last, bs.LastVerify = rec.Last, rec.LastVerify
			if rec.LastSuccess != nil {
				t := rec.LastSuccess.Start
				bs.LastSuccess = &t
			}
		}
		bs.Next = backup.NextRun([]*model.Backup{b}, st, now, a.Config.Machine)
		out = append(out, bs)
	}
	return out
}
