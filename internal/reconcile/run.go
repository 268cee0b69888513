package reconcile

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/workqueue"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/source"
)

// Run reconciles continuously until ctx ends: it polls the source at the
// Cluster's interval (or when Trigger is called), re-applies every component
// at that interval, and reacts at once to drift seen by its watches and to
// dependencies becoming Ready. Failures are retried with backoff; nothing
// short of ctx ending stops it.
func (r *Reconciler) Run(ctx context.Context) error {
	w := kube.NewWatcher(r.opts.Kube, r.opts.Cluster, r.onObjectChange)
	w.Start(ctx)
	r.applier.Live = w
	r.watcher = w
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "components"})
	r.mu.Lock()
	r.queue = q
	r.mu.Unlock()
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	for range r.opts.Workers {
		go r.worker(ctx, q)
	}
	if r.opts.Objects != nil {
		go r.backupLoop(ctx)
	}

	var last source.Revision
	backoff := time.Second
	primed := false
	for {
		interval := time.Minute
		err := func() error {
			if !primed {
				if err := r.prime(ctx); err != nil {
					return err
				}
				primed = true
			}
			t0 := time.Now()
			rev, err := r.opts.Source.Resolve(ctx)
			if err != nil {
				return err
			}
			if rev != last || r.current() == nil {
				st, err := r.load(ctx, rev)
				if r.opts.Metrics != nil {
					r.opts.Metrics.Fetch.Observe(time.Since(t0).Seconds())
				}
				if err != nil {
					r.setBroken(err)
					return err
				}
				r.log.Info("new revision", "revision", rev.String(), "components", len(st.byName))
				r.mu.Lock()
				r.state, r.broken = st, nil
				r.mu.Unlock()
				last = rev
			}
			return nil
		}()
		if st := r.current(); st != nil {
			interval = st.cluster.Spec.IntervalOrDefault()
			// Every interval, check every component: cheap when idle.
			for name := range st.byName {
				q.Add(name)
			}
		}
		if err != nil {
			if r.opts.Metrics != nil {
				r.opts.Metrics.FetchError.Inc()
			}
			r.log.Error("fetch failed; keeping the last revision", "err", err, "retry", backoff)
			interval = min(backoff, interval)
			backoff = min(backoff*2, 5*time.Minute)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		case <-r.trigger:
		}
	}
}

// Trigger makes Run look at the source now (webhooks use it).
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

func (r *Reconciler) current() *state {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

func (r *Reconciler) setBroken(err error) {
	r.mu.Lock()
	r.broken = err
	r.mu.Unlock()
}

func (r *Reconciler) worker(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) {
	for {
		name, shutdown := q.Get()
		if shutdown {
			return
		}
		st := r.current()
		if st == nil {
			q.Done(name)
			continue
		}
		if _, ok := st.byName[name]; !ok {
			q.Forget(name)
			q.Done(name)
			continue
		}
		res := r.reconcileComponent(ctx, st, name)
		switch {
		case res.Err != nil:
			q.AddRateLimited(name)
		case res.Ready:
			q.Forget(name)
			// Dependents start now, not at the next interval.
			for _, c := range st.cluster.Spec.Components {
				for _, d := range c.DependsOn {
					if d == name {
						q.Add(c.Name)
					}
				}
			}
		default:
			q.Forget(name)
		}
		q.Done(name)
		if r.OnResult != nil {
			r.OnResult(res)
		}
	}
}

// onObjectChange runs on every watch event of a managed object. It enqueues
// the object's component when tend's fields on it changed or it was
// deleted: that is drift. Status updates by controllers don't qualify.
func (r *Reconciler) onObjectChange(u *unstructured.Unstructured, deleted bool) {
	comp := u.GetLabels()[kube.LabelComponent]
	r.mu.Lock()
	cs, q := r.comps[comp], r.queue
	var entry *kube.Entry
	if cs != nil {
		id := kube.IDOf(u).String()
		for i := range cs.obj.Status.Inventory {
			if cs.obj.Status.Inventory[i].ID == id {
				entry = &cs.obj.Status.Inventory[i]
				break
			}
		}
	}
	r.mu.Unlock()
	if entry == nil || q == nil {
		return
	}
	if deleted || kube.FieldsHash(u) != entry.Fields {
		q.Add(comp)
	}
}
