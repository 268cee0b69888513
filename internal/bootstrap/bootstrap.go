// Package bootstrap installs tend's agent into a cluster and hands over to
// it. The agent's manifests (namespace, RBAC, service account, the
// Component CRD and the Deployment running `tend agent`) are plain YAML
// written into the ops repository as the component "tend", and applied once
// through the same engine the agent uses, under the same inventory, so the
// agent adopts them and from then on upgrades itself from git. Credentials
// (git token, age identity) go only into Secrets in the cluster, never into
// git.
package bootstrap

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/render"
)

// Options describe the agent to install.
type Options struct {
	RepoURL, Cluster string
	// Revision is the branch, tag or range the agent follows.
	Revision string
	// Image of tend, e.g. registry.example.test/tend:1.2.0.
	Image    string
	Replicas int
	// Path of the component in the ops repository (default tend).
	Path string
	// Credentials, stored as Secrets in tend-system, never in git.
	GitUsername, GitToken string
	AgeIdentity           []byte
	WebhookSecret         string
}

// SourceSecret and the keys the Deployment reads from it.
const (
	SourceSecret  = "tend-source"
	AgeSecret     = "sops-age"
	ComponentName = "tend"
)

// Manifests renders the agent's objects as YAML, for the ops repository.
func Manifests(o Options) string {
	if o.Replicas == 0 {
		o.Replicas = 2
	}
	rev := ""
	if o.Revision != "" {
		rev = fmt.Sprintf("\n            - --revision=%s", o.Revision)
	}
	crd, _ := yaml.Marshal(kube.CRD().Object)
	return fmt.Sprintf(`# tend's own agent, written by tend bootstrap. tend manages it from git:
# upgrading tend is a commit that changes the image below.
apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: tend
  namespace: %[1]s
---
# The agent applies whatever git holds, so it needs to manage every kind.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: tend-%[2]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
  - kind: ServiceAccount
    name: tend
    namespace: %[1]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tend
  namespace: %[1]s
  labels: {app.kubernetes.io/name: tend}
spec:
  replicas: %[3]d
  strategy:
    type: RollingUpdate
    # A new version must be ready before an old one goes: a broken image
    # leaves the old agents running.
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  selector:
    matchLabels: {app.kubernetes.io/name: tend}
  template:
    metadata:
      labels: {app.kubernetes.io/name: tend}
    spec:
      serviceAccountName: tend
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: agent
          image: %[4]s
          args:
            - agent
            - --repo=%[5]s
            - --cluster=%[2]s%[6]s
            - --metrics-addr=:9797
            - --webhook-addr=:9292
          env:
            - name: TEND_GIT_USERNAME
              valueFrom: {secretKeyRef: {name: %[7]s, key: username, optional: true}}
            - name: TEND_GIT_TOKEN
              valueFrom: {secretKeyRef: {name: %[7]s, key: token, optional: true}}
            - name: TEND_WEBHOOK_SECRET
              valueFrom: {secretKeyRef: {name: %[7]s, key: webhookSecret, optional: true}}
          ports:
            - {name: metrics, containerPort: 9797}
            - {name: webhook, containerPort: 9292}
          readinessProbe:
            httpGet: {path: /healthz, port: metrics}
          livenessProbe:
            httpGet: {path: /healthz, port: metrics}
            initialDelaySeconds: 10
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {memory: 512Mi}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          # Backups of the cluster's objects are exported here before
          # restic encrypts them: memory, never the node's disk.
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - {name: tmp, emptyDir: {medium: Memory, sizeLimit: 256Mi}}
---
%[8]s`, kube.Namespace, o.Cluster, o.Replicas, o.Image, o.RepoURL, rev, SourceSecret, strings.TrimSpace(string(crd))+"\n")
}

// Objects decodes the manifests.
func Objects(o Options) ([]render.Object, error) {
	return render.Decode(o.pathOrDefault()+"/tend.yaml", []byte(Manifests(o)))
}

func (o Options) pathOrDefault() string {
	if o.Path == "" {
		return "tend"
	}
	return o.Path
}

// Result says what bootstrap did.
type Result struct {
	Changes *kube.ChangeSet `json:"changes"`
	Secrets []string        `json:"secrets"`
}

// Apply installs the agent: the credential Secrets, then the manifests
// through the engine under the component "tend" of the cluster, so that the
// agent's first reconcile finds them in its inventory. Re-running it
// changes nothing that is already right.
func Apply(ctx context.Context, c *kube.Client, o Options) (*Result, error) {
	if err := c.EnsureSetup(ctx); err != nil {
		return nil, err
	}
	res := &Result{}
	secrets := map[string]map[string][]byte{}
	src := map[string][]byte{}
	if o.GitToken != "" {
		src["token"] = []byte(o.GitToken)
		src["username"] = []byte(o.GitUsername)
	}
	if o.WebhookSecret != "" {
		src["webhookSecret"] = []byte(o.WebhookSecret)
	}
	if len(src) > 0 {
		secrets[SourceSecret] = src
	}
	if len(o.AgeIdentity) > 0 {
		secrets[AgeSecret] = map[string][]byte{"age.agekey": o.AgeIdentity}
	}
	for name, data := range secrets {
		changed, err := ensureSecret(ctx, c, name, data)
		if err != nil {
			return nil, err
		}
		if changed {
			res.Secrets = append(res.Secrets, name)
		}
	}
	objs, err := Objects(o)
	if err != nil {
		return nil, err
	}
	prior, existed, err := c.GetComponent(ctx, ComponentName)
	if err != nil {
		return nil, err
	}
	a := &kube.Applier{C: c, Live: kube.Direct{C: c}}
	cs, err := a.Apply(ctx, kube.Request{Cluster: o.Cluster, Component: ComponentName, Prune: true, Objects: objs, Inventory: prior.Status.Inventory})
	res.Changes = cs
	if err != nil {
		return res, err
	}
	st := prior.Status
	st.Inventory = cs.Inventory
	st.Conditions = append([]metav1.Condition(nil), st.Conditions...)
	setReady(&st, "Bootstrapped", "installed by tend bootstrap; the agent takes over from git")
	spec := kube.ComponentSpec{Cluster: o.Cluster, Path: o.pathOrDefault(), Prune: true}
	if existed && prior.Spec.Cluster == o.Cluster {
		// Keep what the agent wrote; only the inventory matters here.
		spec = prior.Spec
		st.Conditions = prior.Status.Conditions
		st.LastAppliedRevision = prior.Status.LastAppliedRevision
	}
	return res, c.WriteComponent(ctx, ComponentName, prior, existed, spec, st)
}

func setReady(st *kube.ComponentStatus, reason, msg string) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == "Ready" {
			st.Conditions[i].Status, st.Conditions[i].Reason, st.Conditions[i].Message = metav1.ConditionTrue, reason, msg
			return
		}
	}
	st.Conditions = append(st.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: metav1.Now()})
}

// ensureSecret creates or updates a Secret in tend-system, writing only
// when the data differs.
func ensureSecret(ctx context.Context, c *kube.Client, name string, data map[string][]byte) (bool, error) {
	secrets := c.Typed.CoreV1().Secrets(kube.Namespace)
	cur, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: kube.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "tend-bootstrap"}}, Data: data}, metav1.CreateOptions{})
		if err != nil {
			return false, fmt.Errorf("create Secret %s/%s: %w", kube.Namespace, name, err)
		}
		return true, nil
	}
	if err != nil {
		return false, err
	}
	same := len(cur.Data) == len(data)
	for k, v := range data {
		if string(cur.Data[k]) != string(v) {
			same = false
		}
	}
	if same {
		return false, nil
	}
	cur.Data = data
	if _, err := secrets.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("update Secret %s/%s: %w", kube.Namespace, name, err)
	}
	return true, nil
}
