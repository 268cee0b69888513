package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/notify"
	"tend.dev/tend/internal/secret"
)

// BackupStateName is the ConfigMap in tend-system where the leader keeps
// the state of the cluster's Backups: last runs and slots. It holds no
// secret.
func BackupStateName(cluster string) string { return "tend-backups-" + cluster }

// backups is the reconciler's side of the cluster's Backups.
type backups struct {
	mu      sync.Mutex // one run at a time: schedule and backupBefore
	started time.Time
	raw     string // the ConfigMap's state as last read or written
	// notifiers deliver to Backups' own targets, one per target set, for
	// the life of the loop (a notifier is goroutines, not a request).
	ctx       context.Context
	notifiers map[string]*notify.Notifier
}

// notifierFor returns the started notifier of targets.
func (r *Reconciler) notifierFor(targets []model.NotifyTarget) *notify.Notifier {
	key := fmt.Sprint(targets)
	if n := r.bk.notifiers[key]; n != nil {
		return n
	}
	n := &notify.Notifier{}
	for _, t := range targets {
		n.Targets = append(n.Targets, notify.Target{URL: t.URL, Slack: t.Slack})
	}
	ctx := r.bk.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	n.Start(ctx)
	if r.bk.notifiers == nil {
		r.bk.notifiers = map[string]*notify.Notifier{}
	}
	r.bk.notifiers[key] = n
	return n
}

// backupRunner returns the runner for the cluster's Backups at st.
func (r *Reconciler) backupRunner(st *state) *backup.Runner {
	ids := r.opts.Identities
	if ids == nil {
		ids = &secret.Identities{}
	}
	return &backup.Runner{Target: r.opts.Cluster, Restic: r.opts.Restic, Dir: filepath.Join(os.TempDir(), "tend-backup-"+r.opts.Cluster), Root: st.dir,
		Decrypt: func(file string, data []byte) ([]byte, error) { return secret.Decrypt(file, data, ids) },
		Objects: r.opts.Objects}
}

func (r *Reconciler) readBackupState(ctx context.Context) (*backup.State, error) {
	cm, err := r.opts.Kube.Typed.CoreV1().ConfigMaps(kube.Namespace).Get(ctx, BackupStateName(r.opts.Cluster), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &backup.State{}, nil
	}
	if err != nil {
		return nil, err
	}
	raw := cm.Data["state.json"]
	r.bk.raw = raw
	var s backup.State
	if raw != "" {
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			return nil, fmt.Errorf("read ConfigMap %s/%s: %w", kube.Namespace, BackupStateName(r.opts.Cluster), err)
		}
	}
	return &s, nil
}

// writeBackupState writes s unless it is what was read: an idle tick
// writes nothing.
func (r *Reconciler) writeBackupState(ctx context.Context, s *backup.State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil || string(b) == r.bk.raw {
		return err
	}
	cms := r.opts.Kube.Typed.CoreV1().ConfigMaps(kube.Namespace)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: BackupStateName(r.opts.Cluster), Namespace: kube.Namespace,
		Labels: map[string]string{kube.LabelCluster: r.opts.Cluster}}, Data: map[string]string{"state.json": string(b)}}
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: kube.FieldManager})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: kube.FieldManager})
	}
	if err == nil {
		r.bk.raw = string(b)
	}
	return err
}

// backupLoop runs the cluster's Backups and drills when due, while this
// replica leads (Run runs only then).
func (r *Reconciler) backupLoop(ctx context.Context) {
	r.bk.started, r.bk.ctx = time.Now(), ctx
	for {
		wait := r.backupTick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (r *Reconciler) backupTick(ctx context.Context) time.Duration {
	st := r.current()
	if st == nil || len(st.backups) == 0 {
		return 30 * time.Second
	}
	r.bk.mu.Lock()
	defer r.bk.mu.Unlock()
	s, err := r.readBackupState(ctx)
	if err != nil {
		r.log.Error("read backup state", "err", err)
		return 30 * time.Second
	}
	keep := map[string]bool{}
	for _, b := range st.backups {
		keep[b.Metadata.Name] = true
	}
	s.Forget(keep)
	tasks := backup.DueTasks(st.backups, s, time.Now(), r.bk.started, r.opts.Cluster)
	runner := r.backupRunner(st)
	for _, t := range tasks {
		r.runBackupTask(ctx, runner, s, t)
		if err := r.writeBackupState(ctx, s); err != nil {
			r.log.Error("write backup state", "err", err)
		}
	}
	if err := r.writeBackupState(ctx, s); err != nil {
		r.log.Error("write backup state", "err", err)
	}
	next := backup.NextRun(st.backups, s, time.Now(), r.opts.Cluster)
	if next.IsZero() {
		return time.Minute
	}
	return min(max(time.Until(next), time.Second), time.Minute)
}

func (r *Reconciler) runBackupTask(ctx context.Context, runner *backup.Runner, s *backup.State, t backup.Task) backup.Run {
	run := runner.Do(ctx, s, t)
	r.reportBackup(t.Backup, run)
	return run
}

// reportBackup logs a run, counts it, and on failure records an Event
// and notifies.
func (r *Reconciler) reportBackup(b *model.Backup, run backup.Run) {
	log := r.log.With("backup", b.Metadata.Name, "kind", run.Kind, "trigger", run.Trigger)
	if m := r.opts.Metrics; m != nil {
		m.ObserveBackup(r.opts.Cluster, run)
	}
	if run.Result == backup.Succeeded {
		log.Info(string(run.Kind)+" succeeded", "snapshot", run.Snapshot, "bytes", run.Bytes, "added", run.Added, "duration", run.Duration)
		return
	}
	log.Error(string(run.Kind)+" failed", "err", run.Error, "hint", run.Hint)
	msg := fmt.Sprintf("%s %s failed: %s", run.Kind, b.Metadata.Name, truncate(run.Error, 1024))
	if r.rec != nil {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: BackupStateName(r.opts.Cluster), Namespace: kube.Namespace}}
		r.rec.Event(cm, corev1.EventTypeWarning, "BackupFailed", msg)
	}
	r.opts.Notifier.Notify(notify.Event{Cluster: r.opts.Cluster, Component: "backup/" + b.Metadata.Name, Outcome: string(run.Kind) + "-failed", Message: msg, Time: run.Start})
	if len(b.Spec.Notify) > 0 {
		r.notifierFor(b.Spec.Notify).Notify(notify.Event{Cluster: r.opts.Cluster, Component: "backup/" + b.Metadata.Name, Outcome: string(run.Kind) + "-failed", Message: msg, Time: run.Start})
	}
}

// backupBefore runs component c's backupBefore Backup once per revision,
// before a change is applied.
func (r *Reconciler) backupBefore(ctx context.Context, st *state, c model.Component) error {
	var b *model.Backup
	for _, x := range st.backups {
		if x.Metadata.Name == c.BackupBefore {
			b = x
		}
	}
	if b == nil {
		return model.WithHint(fmt.Errorf("backupBefore %q is not a Backup of cluster %s", c.BackupBefore, r.opts.Cluster), "name a Backup whose spec.cluster.name is %s", r.opts.Cluster)
	}
	if r.opts.Objects == nil {
		return fmt.Errorf("this agent cannot run cluster backups")
	}
	r.bk.mu.Lock()
	defer r.bk.mu.Unlock()
	s, err := r.readBackupState(ctx)
	if err != nil {
		return err
	}
	if rec := s.Record(b.Metadata.Name, time.Now()); rec.BeforeRevision == st.rev.String() && rec.Last != nil && rec.Last.Result == backup.Succeeded {
		return nil
	}
	run := r.runBackupTask(ctx, r.backupRunner(st), s, backup.Task{Backup: b, Kind: backup.KindBackup, Trigger: backup.Before})
	if run.Result == backup.Succeeded {
		s.Record(b.Metadata.Name, time.Now()).BeforeRevision = st.rev.String()
	}
	if err := r.writeBackupState(ctx, s); err != nil {
		r.log.Error("write backup state", "err", err)
	}
	if run.Result != backup.Succeeded {
		return &model.HintError{Err: fmt.Errorf("backup %s before the change failed: %s", b.Metadata.Name, run.Error),
			Hint: "this component waits until the backup succeeds; the others go on. " + run.Hint}
	}
	return nil
}
