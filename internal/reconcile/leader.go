package reconcile

import (
	"context"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"tend.dev/tend/internal/kube"
)

// LeaderOptions configure leader election between agent replicas.
type LeaderOptions struct {
	// Namespace and Name of the coordination.k8s.io Lease.
	Namespace, Name string
	// Identity of this replica (default hostname_pid).
	Identity string
	// LeaseDuration bounds how long a dead leader blocks the others
	// (default 10s: a standby takes over within about 12s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// KeepOnExit leaves the Lease held when ctx ends, as a crash would; by
	// default a replica that shuts down releases it so a standby takes
	// over at once.
	KeepOnExit bool
}

// RunLeaderElected runs Run only while this replica holds the Lease, so
// that among several replicas exactly one writes. It returns when ctx ends
// or leadership is lost (the caller exits; a restarted replica rejoins as
// a standby).
func (r *Reconciler) RunLeaderElected(ctx context.Context, lo LeaderOptions) error {
	if lo.Namespace == "" {
		lo.Namespace = kube.Namespace
	}
	if lo.Name == "" {
		lo.Name = "tend-" + r.opts.Cluster
	}
	if lo.Identity == "" {
		host, _ := os.Hostname()
		lo.Identity = fmt.Sprintf("%s_%d", host, os.Getpid())
	}
	if lo.LeaseDuration == 0 {
		lo.LeaseDuration, lo.RenewDeadline, lo.RetryPeriod = 10*time.Second, 7*time.Second, 2*time.Second
	}
	if err := r.opts.Kube.EnsureSetup(ctx); err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: lo.Namespace, Name: lo.Name},
		Client:     r.opts.Kube.Typed.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: lo.Identity},
	}
	lost := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: lo.LeaseDuration, RenewDeadline: lo.RenewDeadline, RetryPeriod: lo.RetryPeriod,
		ReleaseOnCancel: !lo.KeepOnExit, Name: lo.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				r.log.Info("became leader", "lease", lo.Namespace+"/"+lo.Name, "identity", lo.Identity)
				_ = r.Run(ctx)
			},
			OnStoppedLeading: func() {
				r.log.Info("leadership lost", "identity", lo.Identity)
				close(lost)
			},
			OnNewLeader: func(id string) {
				if id != lo.Identity {
					r.log.Info("standby", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	le.Run(ctx)
	select {
	case <-ctx.Done():
		return nil
	case <-lost:
		return fmt.Errorf("lost the leader lease %s/%s", lo.Namespace, lo.Name)
	}
}
