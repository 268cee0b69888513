package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/cli"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/notify"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/testenv"
)

const shopCluster = `apiVersion: tend.dev/v1alpha1
kind: Cluster
metadata: {name: bk}
spec:
  interval: 2s
  components:
  - {name: shop-ns, path: shop/ns}
  - {name: shop, path: shop/app, namespace: shop, dependsOn: [shop-ns], wait: true, backupBefore: shop-objects}
`

func shopApp(version string) map[string]string {
	return map[string]string{
		"shop/ns/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
		"shop/app/app.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: shop}}
spec:
  replicas: 1
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      tolerations: [{operator: Exists}]
      containers: [{name: web, image: registry.test/shop:` + version + `}]
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: shop}}
spec:
  selector: {app: shop}
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {app: shop}}
data: {version: "` + version + `"}
---
apiVersion: v1
kind: Secret
metadata: {name: db, labels: {app: shop}}
stringData: {password: "shop-db-password-not-in-logs"}
`}
}

func TestClusterBackup(t *testing.T) {
	cp := testenv.ControlPlane(t)
	kc := cp.Kubeconfig
	s3 := testenv.NewS3(t)
	s3.CreateBucket(t, "backups")
	id, _ := age.GenerateX25519Identity()
	key := filepath.Join(t.TempDir(), "age.key")
	os.WriteFile(key, []byte(id.String()+"\n"), 0o600)
	rule, _ := secret.AgeRule(id.Recipient().String())
	enc, err := secret.Encrypt("secrets/s3.yaml", []byte(fmt.Sprintf("accessKeyID: %s\nsecretAccessKey: %s\npassword: cluster-repo-passphrase\n", s3.AccessKey, s3.SecretKey)), rule)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := shopApp("1.0")
	files["c.yaml"] = shopCluster
	files["secrets/s3.yaml"] = string(enc)
	files["backups/shop.yaml"] = fmt.Sprintf(`apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: shop-objects}
spec:
  cluster: {name: bk, namespaces: [shop], selector: "app=shop"}
  repository:
    s3: {endpoint: %q, bucket: backups}
    credentials: secrets/s3.yaml
  schedule: {cron: "@every 5s"}
  keep: {last: 10}
`, s3.Endpoint)
	testenv.WriteFiles(t, dir, files)
	base := []string{"--repo", dir, "--cluster", "bk", "--kubeconfig", kc, "--age-identity", key}
	if code, out, errOut := run(t, append([]string{"apply"}, base...)...); code != 0 {
		t.Fatalf("apply = %d\n%s%s", code, out, errOut)
	}
	c, err := kube.NewClient(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("back up, delete the namespace, restore", func(t *testing.T) {
		code, out, errOut := run(t, append([]string{"backup", "run", "shop-objects"}, base...)...)
		if code != 0 || !strings.Contains(out, "✓ backup shop-objects on bk") {
			t.Fatalf("backup run = %d\n%s%s", code, out, errOut)
		}
		if err := c.Typed.CoreV1().Namespaces().Delete(ctx, "shop", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, time.Minute, "namespace shop gone", func() bool {
			_, err := c.Typed.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		})
		code, out, errOut = run(t, append([]string{"backup", "restore", "shop-objects"}, base...)...)
		if code != 0 || !strings.Contains(out, "✓ restored shop-objects") {
			t.Fatalf("restore = %d\n%s%s", code, out, errOut)
		}
		t.Logf("tend backup restore shop-objects:\n%s", out)
		testenv.Eventually(t, time.Minute, "the restored Deployment Available", func() bool {
			d, err := c.Typed.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
			return err == nil && d.Status.AvailableReplicas == 1
		})
		s, err := c.Typed.CoreV1().Secrets("shop").Get(ctx, "db", metav1.GetOptions{})
		if err != nil || string(s.Data["password"]) != "shop-db-password-not-in-logs" {
			t.Fatalf("restored Secret = %v, %v", s, err)
		}
		if comp := s.Labels[kube.LabelComponent]; comp != "shop" {
			t.Errorf("the restored Secret belongs to component %q, want shop (so drift correction does not fight it)", comp)
		}
		if m := s.ManagedFields; len(m) == 0 || m[0].Manager != kube.FieldManager {
			t.Errorf("restored with field managers %v, want tend", m)
		}
		// The component's next apply finds nothing to change.
		code, out, _ = run(t, append([]string{"diff"}, base...)...)
		if code != 0 {
			t.Errorf("diff after the restore = %d, want no changes:\n%s", code, out)
		}
	})
	t.Run("restore into another namespace", func(t *testing.T) {
		code, out, errOut := run(t, append([]string{"backup", "restore", "shop-objects", "--namespace", "shop-copy"}, base...)...)
		if code != 0 {
			t.Fatalf("restore --namespace = %d\n%s%s", code, out, errOut)
		}
		if cm, err := c.Typed.CoreV1().ConfigMaps("shop-copy").Get(ctx, "settings", metav1.GetOptions{}); err != nil || cm.Data["version"] != "1.0" {
			t.Errorf("ConfigMap in shop-copy = %v, %v", cm, err)
		}
	})
	t.Run("the agent backs up on schedule and before a change", func(t *testing.T) {
		// A Backup whose bucket does not exist fails on every run: its
		// failures go to its own notify target and the agent's.
		events := make(chan notify.Event, 100)
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var e notify.Event
			json.NewDecoder(r.Body).Decode(&e)
			events <- e
		}))
		defer hook.Close()
		testenv.WriteFiles(t, dir, map[string]string{"backups/broken.yaml": fmt.Sprintf(`apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: broken}
spec:
  cluster: {name: bk, namespaces: [shop]}
  repository:
    s3: {endpoint: %q, bucket: no-such-bucket}
    credentials: secrets/s3.yaml
  schedule: {cron: "@every 5s"}
  keep: {last: 1}
  notify: [{url: %q}]
`, s3.Endpoint, hook.URL)})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan int, 1)
		go func() {
			done <- cli.Main(rctx, append([]string{"run", "--log-level", "warn", "--notify-url", hook.URL}, base...), &strings.Builder{}, &strings.Builder{})
		}()
		defer func() { cancel(); <-done }()
		state := func() *backup.Record {
			cm, err := c.Typed.CoreV1().ConfigMaps(kube.Namespace).Get(ctx, reconcile.BackupStateName("bk"), metav1.GetOptions{})
			if err != nil {
				return nil
			}
			var s backup.State
			json.Unmarshal([]byte(cm.Data["state.json"]), &s)
			return s.Backups["shop-objects"]
		}
		testenv.Eventually(t, time.Minute, "a scheduled backup by the agent", func() bool {
			r := state()
			return r != nil && r.Last != nil && r.Last.Trigger == backup.Scheduled && r.Last.Result == backup.Succeeded
		})
		testenv.WriteFiles(t, dir, shopApp("1.1"))
		testenv.Eventually(t, time.Minute, "a backup before the change, then the change", func() bool {
			r := state()
			if r == nil || r.BeforeRevision == "" {
				return false
			}
			cm, err := c.Typed.CoreV1().ConfigMaps("shop").Get(ctx, "settings", metav1.GetOptions{})
			return err == nil && cm.Data["version"] == "1.1"
		})
		got := map[string]bool{}
		testenv.Eventually(t, 30*time.Second, "the failed backup notified twice (its own target and the agent's)", func() bool {
			for {
				select {
				case e := <-events:
					if e.Component == "backup/broken" && e.Outcome == "backup-failed" && strings.Contains(e.Message, "bucket") {
						got[e.Message+fmt.Sprint(len(got))] = true
					}
				default:
					return len(got) >= 2
				}
			}
		})
		code, out, _ := run(t, "status", "--cluster", "bk", "--kubeconfig", kc)
		if code != 1 || !strings.Contains(grepLine(out, "broken"), "failed") {
			t.Errorf("tend status = %d with a failing backup, want 1 and the failure shown:\n%s", code, out)
		}
		t.Logf("tend status:\n%s", out)
		if !strings.Contains(out, "BACKUP") || !strings.Contains(grepLine(out, "shop-objects"), "succeeded") {
			t.Errorf("tend status does not show the backup:\n%s", out)
		}
		cm, _ := c.Typed.CoreV1().ConfigMaps(kube.Namespace).Get(ctx, reconcile.BackupStateName("bk"), metav1.GetOptions{})
		if strings.Contains(fmt.Sprint(cm.Data), "cluster-repo-passphrase") || strings.Contains(fmt.Sprint(cm.Data), s3.SecretKey) {
			t.Error("the backup state holds a secret")
		}
	})
}

func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
