// Package reconcile keeps a cluster equal to a Cluster definition in git:
// it fetches the source, loads and renders the components, and applies them
// in dependency order through kube.Applier. Once serves `tend apply`; Run
// serves `tend run` and the agent, reacting to new revisions, to dependencies
// becoming Ready and to drift reported by watches.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/notify"
	"tend.dev/tend/internal/render"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/source"
)

// Ready condition reasons.
const (
	ReasonApplied            = "Applied"
	ReasonHealthy            = "Healthy"
	ReasonRenderFailed       = "RenderFailed"
	ReasonApplyFailed        = "ApplyFailed"
	ReasonHealthCheckFailed  = "HealthCheckFailed"
	ReasonDependencyNotReady = "DependencyNotReady"
	ReasonBackupFailed       = "BackupFailed"
)

// Options configure a Reconciler.
type Options struct {
	Source  source.Source
	Cluster string
	Kube    *kube.Client
	Log     *slog.Logger
	Metrics *Metrics // optional
	// Workers bounds the components reconciled at once (default 8).
	Workers int
	// Events are recorded on the Component objects unless set to false.
	Events bool
	// Notifier, when set, receives every outcome that changed something or
	// failed; it never blocks reconciliation.
	Notifier *notify.Notifier
	// Identities decrypt SOPS files in memory; with none, a component with
	// an encrypted file fails and names the file and its recipients.
	Identities *secret.Identities
	// Objects, when set, lets the reconciler run the cluster's Backups:
	// on their schedule while it runs (the leader), and before components
	// with backupBefore. Restic is the restic binary (default from PATH).
	Objects backup.Objects
	Restic  string
}

// Reconciler reconciles one Cluster.
type Reconciler struct {
	opts    Options
	log     *slog.Logger
	applier *kube.Applier
	rec     record.EventRecorder

	mu      sync.Mutex
	state   *state
	comps   map[string]*compState
	broken  error // why the current revision could not be loaded
	queue   workqueue.TypedRateLimitingInterface[string]
	watcher *kube.Watcher
	trigger chan struct{}
	bk      backups

	// OnResult, when set, sees every component result in Run (tests and
	// benchmarks use it).
	OnResult func(Result)
}

// state is one loaded revision of the repository.
type state struct {
	dir     string
	backups []*model.Backup
	rev     source.Revision
	cluster *model.Cluster
	objects map[string][]render.Object
	errs    map[string]error
	byName  map[string]model.Component
}

// compState is what tend knows of one component between reconciles.
type compState struct {
	obj     kube.Component
	existed bool
	ready   bool
	readyAt string // revision the component became ready at
}

// Result is the outcome of one component reconcile.
type Result struct {
	Component string          `json:"component"`
	Ready     bool            `json:"ready"`
	Reason    string          `json:"reason"`
	Message   string          `json:"message"`
	Revision  string          `json:"revision"`
	Changes   *kube.ChangeSet `json:"changeSet,omitempty"`
	Hint      string          `json:"hint,omitempty"`
	Duration  time.Duration   `json:"duration"`
	Err       error           `json:"-"`
}

// New returns a Reconciler.
func New(opts Options) *Reconciler {
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reconciler{opts: opts, log: log.With("cluster", opts.Cluster), comps: map[string]*compState{}, trigger: make(chan struct{}, 1),
		applier: &kube.Applier{C: opts.Kube, Live: kube.Direct{C: opts.Kube}}}
	if opts.Events {
		b := record.NewBroadcaster()
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: opts.Kube.Typed.CoreV1().Events("")})
		r.rec = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "tend"})
	}
	return r
}

// load fetches rev and renders every component of the cluster.
func (r *Reconciler) load(ctx context.Context, rev source.Revision) (*state, error) {
	dir, err := r.opts.Source.Checkout(ctx, rev)
	if err != nil {
		return nil, err
	}
	repo, lerr := model.Load(dir)
	if repo == nil {
		return nil, lerr
	}
	cl, err := repo.Cluster(r.opts.Cluster)
	if err != nil {
		if lerr != nil {
			return nil, errors.Join(lerr, err)
		}
		return nil, err
	}
	// Problems in other Clusters' files must not stop this one.
	if errs := model.ValidateCluster(dir, cl); len(errs) > 0 {
		return nil, errs
	}
	st := &state{dir: dir, backups: repo.ClusterBackups(r.opts.Cluster), rev: rev, cluster: cl, objects: map[string][]render.Object{}, errs: map[string]error{}, byName: map[string]model.Component{}}
	for _, c := range cl.Spec.Components {
		st.byName[c.Name] = c
		objs, err := render.Component(dir, c, cl.Vars(c), r.decrypter())
		if err != nil {
			st.errs[c.Name] = err
			continue
		}
		st.objects[c.Name] = objs
	}
	return st, nil
}

func (r *Reconciler) decrypter() render.Decrypter {
	ids := r.opts.Identities
	if ids == nil {
		ids = &secret.Identities{}
	}
	return func(file string, data []byte) ([]byte, error) { return secret.Decrypt(file, data, ids) }
}

// prime reads the Component objects of the cluster, with their inventories.
func (r *Reconciler) prime(ctx context.Context) error {
	if err := r.opts.Kube.EnsureSetup(ctx); err != nil {
		return err
	}
	list, err := r.opts.Kube.ListComponents(ctx, "")
	if err != nil {
		return fmt.Errorf("read component status: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range list {
		r.comps[c.Name] = &compState{obj: c, existed: true}
	}
	return nil
}

func (r *Reconciler) comp(name string) *compState {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, ok := r.comps[name]
	if !ok {
		cs = &compState{obj: kube.Component{Name: name}}
		r.comps[name] = cs
	}
	return cs
}

// reconcileComponent applies one component of st and records the outcome.
func (r *Reconciler) reconcileComponent(ctx context.Context, st *state, name string) Result {
	start := time.Now()
	c := st.byName[name]
	cs := r.comp(name)
	res := Result{Component: name, Revision: st.rev.String()}
	spec := kube.ComponentSpec{Cluster: r.opts.Cluster, Path: c.Path, Namespace: c.Namespace, DependsOn: c.DependsOn, Prune: c.PruneEnabled(), Wait: c.Wait}
	r.mu.Lock()
	prior := cs.obj.Status
	r.mu.Unlock()
	next := prior
	next.Conditions = append([]metav1.Condition(nil), prior.Conditions...)
	next.LastAttemptedRevision = st.rev.String()

	var notReady []string
	for _, d := range c.DependsOn {
		dcs := r.comp(d)
		r.mu.Lock()
		ok := dcs.ready && dcs.readyAt == st.rev.String()
		r.mu.Unlock()
		if !ok {
			notReady = append(notReady, d)
		}
	}
	var applyErr error
	r.mu.Lock()
	owner := cs.obj.Spec.Cluster
	r.mu.Unlock()
	switch {
	case owner != "" && owner != r.opts.Cluster:
		// Two Cluster definitions applied to one API server: refuse rather
		// than let one overwrite the other's inventory and status.
		err := model.WithHint(fmt.Errorf("component %s on this API server belongs to Cluster %q, not %q", name, owner, r.opts.Cluster),
			"each Kubernetes cluster is one Cluster in git; check --cluster and --kubeconfig, or rename the component")
		res.Reason = ReasonApplyFailed
		res.Err, res.Message, res.Hint = err, err.Error(), model.HintOf(err)
		r.report(res, prior)
		return res
	case st.errs[name] != nil:
		res.Reason, applyErr = ReasonRenderFailed, st.errs[name]
	case len(notReady) > 0:
		res.Reason = ReasonDependencyNotReady
		res.Message = "waiting for " + strings.Join(notReady, ", ") + " to be Ready"
	case c.BackupBefore != "" && prior.LastAppliedRevision != st.rev.String() && r.opts.Objects != nil && setErr(&applyErr, r.backupBefore(ctx, st, c)):
		// A new revision waits for a fresh backup; this component only.
		res.Reason = ReasonBackupFailed
	default:
		changes, err := r.applier.Apply(ctx, kube.Request{
			Cluster: r.opts.Cluster, Component: name, Namespace: c.Namespace,
			Force: c.Force, Prune: c.PruneEnabled(), Wait: c.Wait, Timeout: c.TimeoutOrDefault(),
			Objects: st.objects[name], Inventory: prior.Inventory,
		})
		res.Changes = changes
		if changes != nil {
			next.Inventory = changes.Inventory
		}
		if err != nil {
			applyErr = err
			res.Reason = ReasonApplyFailed
			var oe *kube.ObjectError
			if errors.As(err, &oe) && oe.Op == "wait for" {
				res.Reason = ReasonHealthCheckFailed
			}
		} else {
			res.Ready = true
			res.Reason = ReasonApplied
			if c.Wait {
				res.Reason = ReasonHealthy
			}
			res.Message = "Applied revision " + st.rev.String()
			next.LastAppliedRevision = st.rev.String()
		}
	}
	if applyErr != nil {
		res.Err = applyErr
		res.Message = applyErr.Error()
		res.Hint = model.HintOf(applyErr)
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// Shutting down: don't record an error that is only ours.
			return res
		}
	}
	next.LastError = ""
	if applyErr != nil {
		next.LastError = res.Message
	}
	status := metav1.ConditionFalse
	if res.Ready {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&next.Conditions, metav1.Condition{Type: "Ready", Status: status, Reason: res.Reason, Message: truncate(res.Message, 2048)})
	res.Duration = time.Since(start)

	r.mu.Lock()
	existed := cs.existed
	old := cs.obj
	r.mu.Unlock()
	if err := r.opts.Kube.WriteComponent(ctx, name, old, existed, spec, next); err != nil {
		r.log.Error("write status", "component", name, "err", err)
	} else {
		r.mu.Lock()
		cs.obj = kube.Component{Name: name, Spec: spec, Status: next, Created: old.Created}
		cs.existed = true
		r.mu.Unlock()
	}
	r.mu.Lock()
	cs.ready = res.Ready
	if res.Ready {
		cs.readyAt = st.rev.String()
	}
	r.mu.Unlock()
	r.report(res, prior)
	return res
}

// setErr stores err in dst and reports whether it is an error.
func setErr(dst *error, err error) bool {
	*dst = err
	return err != nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// report logs, records events and counts metrics for one outcome.
func (r *Reconciler) report(res Result, prior kube.ComponentStatus) {
	log := r.log.With("component", res.Component, "revision", res.Revision)
	outcome := "unchanged"
	if res.Changes != nil {
		for _, c := range res.Changes.Drifted() {
			log.Info("drift corrected", "object", c.Object, "manager", c.Manager, "reason", c.Reason)
			msg := fmt.Sprintf("%s was %s by %q; reverted to git", c.Object, verbFor(c.Manager), c.Manager)
			r.event(res.Component, corev1.EventTypeWarning, "DriftCorrected", msg)
			r.notify(res, "drift", msg)
			if r.opts.Metrics != nil {
				r.opts.Metrics.Drift.WithLabelValues(r.opts.Cluster, res.Component, c.ID.GroupKind.Kind).Inc()
			}
		}
		created, configured, deleted := res.Changes.Count(kube.Created), res.Changes.Count(kube.Configured), res.Changes.Count(kube.Deleted)
		if created+configured > 0 {
			outcome = "applied"
			log.Info("applied", "created", created, "configured", configured, "unchanged", res.Changes.Count(kube.Unchanged))
			msg := fmt.Sprintf("revision %s: %d created, %d configured", res.Revision, created, configured)
			r.event(res.Component, corev1.EventTypeNormal, "Applied", msg)
			r.notify(res, "applied", msg)
		}
		if deleted > 0 {
			log.Info("pruned", "deleted", deleted)
			msg := fmt.Sprintf("%d objects removed from git deleted", deleted)
			r.event(res.Component, corev1.EventTypeNormal, "Pruned", msg)
			r.notify(res, "pruned", msg)
		}
	}
	switch {
	case res.Err != nil:
		outcome = "failed"
		log.Error("reconcile failed", "reason", res.Reason, "err", res.Err, "hint", res.Hint)
		if prior.LastError != res.Message {
			r.event(res.Component, corev1.EventTypeWarning, res.Reason, truncate(res.Message, 1024))
			r.notify(res, "failed", res.Reason+": "+truncate(res.Message, 1024))
		}
	case res.Reason == ReasonDependencyNotReady:
		outcome = "blocked"
		log.Debug("waiting for dependencies", "message", res.Message)
	}
	if m := r.opts.Metrics; m != nil {
		m.Duration.WithLabelValues(r.opts.Cluster, res.Component).Observe(res.Duration.Seconds())
		m.Total.WithLabelValues(r.opts.Cluster, res.Component, outcome).Inc()
		if res.Ready {
			m.Revision.DeletePartialMatch(map[string]string{"cluster": r.opts.Cluster, "component": res.Component})
			m.Revision.WithLabelValues(r.opts.Cluster, res.Component, res.Revision).Set(1)
		}
	}
}

func (r *Reconciler) notify(res Result, outcome, msg string) {
	r.opts.Notifier.Notify(notify.Event{Cluster: r.opts.Cluster, Component: res.Component, Revision: res.Revision, Outcome: outcome, Message: msg})
}

func verbFor(manager string) string {
	if manager == "deleted" {
		return "deleted"
	}
	return "changed"
}

func (r *Reconciler) event(component, typ, reason, msg string) {
	if r.rec == nil {
		return
	}
	r.mu.Lock()
	cs := r.comps[component]
	var uid string
	if cs != nil {
		uid = string(cs.obj.UID)
	}
	r.mu.Unlock()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "tend.dev/v1alpha1", "kind": "Component",
		"metadata": map[string]any{"name": component, "namespace": kube.Namespace, "uid": uid},
	}}
	r.rec.Event(obj, typ, reason, msg)
}

// Once fetches the source and applies every component once, in dependency
// order, as many at a time as Workers allows. A component starts the moment
// its dependencies are Ready. It returns one Result per component.
func (r *Reconciler) Once(ctx context.Context) ([]Result, source.Revision, error) {
	rev, err := r.opts.Source.Resolve(ctx)
	if err != nil {
		return nil, rev, err
	}
	st, err := r.load(ctx, rev)
	if err != nil {
		return nil, rev, err
	}
	if err := r.prime(ctx); err != nil {
		return nil, rev, err
	}
	return r.applyAll(ctx, st), rev, nil
}

func (r *Reconciler) applyAll(ctx context.Context, st *state) []Result {
	done := map[string]chan struct{}{}
	for name := range st.byName {
		done[name] = make(chan struct{})
	}
	results := make([]Result, 0, len(st.byName))
	var mu sync.Mutex
	sem := make(chan struct{}, r.opts.Workers)
	var wg sync.WaitGroup
	for _, name := range model.Order(st.cluster.Spec.Components) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[name])
			for _, d := range st.byName[name].DependsOn {
				select {
				case <-done[d]:
				case <-ctx.Done():
				}
			}
			sem <- struct{}{}
			res := r.reconcileComponent(ctx, st, name)
			<-sem
			mu.Lock()
			results = append(results, res)
			if r.OnResult != nil {
				r.OnResult(res)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].Component < results[j].Component })
	return results
}
