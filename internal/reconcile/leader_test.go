package reconcile_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
	"tend.dev/tend/internal/testenv"
)

// TestLeaderElection: of two replicas only the leader writes; when it dies
// without releasing the Lease, the standby takes over within 15 s and
// corrects drift again.
func TestLeaderElection(t *testing.T) {
	c, _ := client(t)
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{
		"c.yaml":     "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: ha}\nspec:\n  interval: 1h\n  components:\n  - {name: ha-ns, path: ns}\n  - {name: ha-app, path: app, namespace: ha, dependsOn: [ha-ns]}\n",
		"ns/a.yaml":  "apiVersion: v1\nkind: Namespace\nmetadata: {name: ha}\n",
		"app/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {k: git}\n",
	})
	src, _ := source.NewDir(dir)
	// Production timings (the zero values): the bound below is the real one.
	lo := func(id string) reconcile.LeaderOptions { return reconcile.LeaderOptions{Identity: id} }
	// The leader dies as in a crash: it stops renewing and keeps the Lease.
	leaderCtx, kill := context.WithCancel(context.Background())
	a := reconcile.New(reconcile.Options{Source: src, Cluster: "ha", Kube: c})
	crash := lo("a")
	crash.KeepOnExit = true
	go a.RunLeaderElected(leaderCtx, crash)
	time.Sleep(500 * time.Millisecond) // a goes first
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := reconcile.New(reconcile.Options{Source: src, Cluster: "ha", Kube: c})
	go b.RunLeaderElected(ctx, lo("b"))

	cms := c.Typed.CoreV1().ConfigMaps("ha")
	testenv.Eventually(t, 30*time.Second, "applied by the leader", func() bool {
		cm, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
		return err == nil && cm.Data["k"] == "git"
	})
	lease, err := c.Typed.CoordinationV1().Leases("tend-system").Get(ctx, "tend-ha", metav1.GetOptions{})
	if err != nil || *lease.Spec.HolderIdentity != "a" {
		t.Fatalf("lease holder = %v, %v; want a", lease, err)
	}
	kill()
	died := time.Now()
	testenv.Eventually(t, 15*time.Second, "standby b holds the lease", func() bool {
		l, err := c.Typed.CoordinationV1().Leases("tend-system").Get(ctx, "tend-ha", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "b"
	})
	t.Logf("standby took over %s after the leader died", time.Since(died).Round(100*time.Millisecond))
	if _, err := cms.Patch(ctx, "cfg", types.MergePatchType, []byte(`{"data":{"k":"edited"}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "the new leader corrects drift", func() bool {
		cm, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
		return err == nil && cm.Data["k"] == "git" && !strings.Contains(cm.Data["k"], "edited")
	})
}

// TestLeaderKilledMidApply: the leader dies while applying 1,000 objects
// (after 50, before its status write); the standby takes over and finishes.
// Server-side apply under one field manager makes the repeated writes
// harmless: every object ends with one tend field set and the git values.
func TestLeaderKilledMidApply(t *testing.T) {
	c, _ := client(t)
	dir := t.TempDir()
	files := map[string]string{
		"c.yaml":    "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: mid}\nspec:\n  interval: 1h\n  components:\n  - {name: mid-ns, path: ns}\n  - {name: mid-app, path: app, namespace: mid, dependsOn: [mid-ns]}\n",
		"ns/a.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: mid}\n",
	}
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm%04d}\ndata: {i: \"%d\"}\n", i, i)
	}
	files["app/all.yaml"] = b.String()
	testenv.WriteFiles(t, dir, files)
	src, _ := source.NewDir(dir)
	leaderCtx, kill := context.WithCancel(context.Background())
	a := reconcile.New(reconcile.Options{Source: src, Cluster: "mid", Kube: c})
	go a.RunLeaderElected(leaderCtx, reconcile.LeaderOptions{Identity: "a", KeepOnExit: true})
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reconcile.New(reconcile.Options{Source: src, Cluster: "mid", Kube: c}).RunLeaderElected(ctx, reconcile.LeaderOptions{Identity: "b"})

	count := func() int {
		l, err := c.Typed.CoreV1().ConfigMaps("mid").List(ctx, metav1.ListOptions{LabelSelector: "tend.dev/component=mid-app"})
		if err != nil {
			return 0
		}
		return len(l.Items)
	}
	testenv.Eventually(t, 60*time.Second, "leader a mid-apply", func() bool { return count() >= 50 })
	kill()
	if n := count(); n >= 1000 {
		t.Fatalf("the apply finished (%d objects) before the leader was killed; the test did not kill it mid-apply", n)
	}
	testenv.Eventually(t, 60*time.Second, "standby b finished the apply", func() bool {
		comp, ok, _ := c.GetComponent(ctx, "mid-app")
		return ok && comp.Status.Ready() != nil && comp.Status.Ready().Status == "True" && comp.Status.InventoryCount == 1000
	})
	l, _ := c.Typed.CoreV1().ConfigMaps("mid").List(ctx, metav1.ListOptions{LabelSelector: "tend.dev/component=mid-app"})
	if len(l.Items) != 1000 {
		t.Fatalf("%d objects, want 1000", len(l.Items))
	}
	for _, cm := range l.Items {
		managers := 0
		for _, mf := range cm.ManagedFields {
			if mf.Manager == "tend" {
				managers++
			}
		}
		var i int
		fmt.Sscanf(cm.Name, "cm%04d", &i)
		if managers != 1 || cm.Data["i"] != fmt.Sprint(i) {
			t.Fatalf("%s: %d tend field sets, data %v", cm.Name, managers, cm.Data)
		}
	}
}
