package reconcile_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
	"tend.dev/tend/internal/testenv"
)

// TestManyClustersOneRepo: two agents on two clusters watch one repository
// (served by git http-backend), each applies only its own Cluster, shared
// components get per-cluster substitutions; then a third, new cluster is
// pointed at an existing Cluster definition and converges to the same
// objects: migration is one change of --cluster.
func TestManyClustersOneRepo(t *testing.T) {
	srv := testenv.NewGitServer(t, "", "")
	wt := srv.Repo(t, "ops")
	cluster := func(name, region string) string {
		return "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: " + name + "}\nspec:\n  interval: 1s\n  substitutions: {region: " + region + "}\n  components:\n  - {name: base, path: base}\n  - {name: web, path: apps/web, namespace: web, dependsOn: [base]}\n"
	}
	wt.Write(t, map[string]string{
		"clusters/east.yaml": cluster("east", "eu-east"),
		"clusters/west.yaml": cluster("west", "us-west"),
		"base/ns.yaml":       "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n",
		"apps/web/cm.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {cluster: \"${cluster_name}\", region: \"${region}\"}\n",
	})
	wt.Commit(t, "feat: two clusters")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent := func(cfgCluster string, c *kube.Client) {
		src, err := source.Open(srv.URL+"/ops.git", source.Options{CacheDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		go reconcile.New(reconcile.Options{Source: src, Cluster: cfgCluster, Kube: c}).Run(ctx)
	}
	east := testenv.NewControlPlane(t)
	west := testenv.NewControlPlane(t)
	ce, _ := kube.NewClient(east.Config)
	cw, _ := kube.NewClient(west.Config)
	agent("east", ce)
	agent("west", cw)
	data := func(c *kube.Client) map[string]string {
		cm, err := c.Typed.CoreV1().ConfigMaps("web").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return cm.Data
	}
	testenv.Eventually(t, 60*time.Second, "east applied its Cluster", func() bool { return data(ce)["region"] == "eu-east" && data(ce)["cluster"] == "east" })
	testenv.Eventually(t, 60*time.Second, "west applied its Cluster", func() bool { return data(cw)["region"] == "us-west" && data(cw)["cluster"] == "west" })
	for name, c := range map[string]*kube.Client{"east": ce, "west": cw} {
		comps, _ := c.ListComponents(ctx, "")
		for _, comp := range comps {
			if comp.Spec.Cluster != name {
				t.Errorf("cluster %s holds component %s of Cluster %s", name, comp.Name, comp.Spec.Cluster)
			}
		}
	}

	// Migration: a new cluster runs the existing east definition.
	next := testenv.NewControlPlane(t)
	cn, _ := kube.NewClient(next.Config)
	agent("east", cn)
	testenv.Eventually(t, 60*time.Second, "the new cluster converged to east's objects", func() bool {
		got, want := data(cn), data(ce)
		return got != nil && got["region"] == want["region"] && got["cluster"] == want["cluster"]
	})
}
