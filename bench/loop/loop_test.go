// Package loop measures and tests tend's whole delivery loop, from a merged
// commit to the new version running, against real local servers only:
// git http-backend, the OCI registry and the dev cluster.
//
//	go test ./bench/loop -run '^$' -bench . -benchtime 1x
package loop

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tend.dev/tend/internal/cli"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
	_ "tend.dev/tend/internal/source/gogit"
	"tend.dev/tend/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func tend(tb testing.TB, args ...string) string {
	tb.Helper()
	var out, errb bytes.Buffer
	if code := cli.Main(context.Background(), args, &out, &errb); code != 0 {
		tb.Fatalf("tend %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String()
}

// deliveryLoop runs the loop once and returns how long it took from the
// feat commit to the Deployment showing the new image.
func deliveryLoop(tb testing.TB, n int) time.Duration {
	cp := testenv.ControlPlane(tb)
	reg := testenv.NewRegistry(tb, "", "")
	srv := testenv.NewGitServer(tb, "", "")
	ns := fmt.Sprintf("loop%d", n)

	app := srv.Repo(tb, "app")
	app.Write(tb, map[string]string{
		"go.mod":  "module example.test/app\n\ngo 1.26\n",
		"main.go": "package main\n\nfunc main() { println(\"app\") }\n",
	})
	app.Commit(tb, "feat: first version")
	testenv.Git(tb, app.Dir, "tag", "v1.0.0")
	testenv.Git(tb, app.Dir, "remote", "set-url", "origin", srv.URL+"/app.git")

	ops := srv.Repo(tb, "ops")
	ops.Write(tb, map[string]string{
		"clusters/loop.yaml": fmt.Sprintf("apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: %[1]s}\nspec:\n  interval: 1s\n  components:\n  - {name: %[1]s-ns, path: ns}\n  - {name: %[1]s-app, path: app, namespace: %[1]s, dependsOn: [%[1]s-ns]}\n", ns),
		"ns/ns.yaml":         fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", ns),
		"policies/app.yaml":  fmt.Sprintf("apiVersion: tend.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: app}\nspec:\n  image: %s/app\n  semver: {range: \"^1\"}\n", reg.Host),
		"app/deploy.yaml": fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: app
        image: %s/app:1.0.0 # {"$imagepolicy": "app"}
`, reg.Host),
	})
	ops.Commit(tb, "feat: app")
	opsURL := srv.URL + "/ops.git"

	// The cluster agent: tend run's engine, following the ops repo.
	c, err := kube.NewClient(cp.Config)
	if err != nil {
		tb.Fatal(err)
	}
	src, err := source.Open(opsURL, source.Options{CacheDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	go reconcile.New(reconcile.Options{Source: src, Cluster: ns, Kube: c}).Run(ctx)
	image := func() string {
		d, err := c.Typed.AppsV1().Deployments(ns).Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return d.Spec.Template.Spec.Containers[0].Image
	}
	testenv.Eventually(tb, 60*time.Second, "the first version deployed", func() bool { return image() == reg.Host+"/app:1.0.0" })

	// 1. A feat commit lands in the app repository.
	t0 := time.Now()
	app.Write(tb, map[string]string{"main.go": "package main\n\nfunc main() { println(\"app v1.1\") }\n"})
	app.Commit(tb, "feat: greet better")
	// 2. tend release tags v1.1.0 and pushes.
	if out := tend(tb, "release", "--dir", app.Dir, "--push"); !strings.Contains(out, "released v1.1.0") {
		tb.Fatalf("release: %s", out)
	}
	// 3. tend image build --push, without Docker.
	tend(tb, "image", "build", "--go", ".", "--go-dir", app.Dir, "--version", "1.1.0", "--insecure-registry", "--push", reg.Host+"/app:1.1.0")
	// 4. tend image update commits the new tag to the ops repository.
	if out := tend(tb, "image", "update", "--repo", opsURL, "--insecure-registry"); !strings.Contains(out, "chore(deploy): app 1.0.0 → 1.1.0") {
		tb.Fatalf("image update: %s", out)
	}
	// 5–6. The agent applies it and the Deployment shows the new image.
	testenv.Eventually(tb, 60*time.Second, "the new version deployed", func() bool { return image() == reg.Host+"/app:1.1.0" })
	return time.Since(t0)
}

func TestDeliveryLoop(t *testing.T) {
	d := deliveryLoop(t, 0)
	t.Logf("feat commit → new image running: %s", d)
}

func BenchmarkDeliveryLoop(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		d := deliveryLoop(b, i+1)
		b.ReportMetric(d.Seconds(), "s/loop")
	}
}
