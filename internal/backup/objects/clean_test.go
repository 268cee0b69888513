package objects

import (
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"tend.dev/tend/internal/kube"
)

func obj(t *testing.T, s string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(s), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestClean(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"server metadata and status go, the rest stays", `
apiVersion: v1
kind: ConfigMap
metadata:
  name: a
  namespace: ns
  uid: 1234
  resourceVersion: "5"
  generation: 2
  creationTimestamp: "2026-01-01T00:00:00Z"
  managedFields: [{manager: kubectl}]
  selfLink: /api/v1/x
  ownerReferences: [{apiVersion: v1, kind: Thing, name: t, uid: u}]
  labels: {app: a}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
    keep: me
  finalizers: [example.test/hold]
data: {k: v}
status: {x: 1}
`, `
apiVersion: v1
kind: ConfigMap
metadata:
  name: a
  namespace: ns
  labels: {app: a}
  annotations: {keep: me}
  finalizers: [example.test/hold]
data: {k: v}
`},
		{"a Service loses its allocated addresses", `
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec:
  clusterIP: 10.0.0.7
  clusterIPs: [10.0.0.7]
  healthCheckNodePort: 31000
  type: LoadBalancer
  ports: [{port: 80, nodePort: 30080}]
`, `
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec:
  type: LoadBalancer
  ports: [{port: 80, nodePort: 30080}]
`},
		{"a headless Service stays headless", `
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: None, clusterIPs: [None]}
`, `
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: None, clusterIPs: [None]}
`},
		{"a Namespace loses its name label and finalizer", `
apiVersion: v1
kind: Namespace
metadata:
  name: ns
  labels: {kubernetes.io/metadata.name: ns}
spec: {finalizers: [kubernetes]}
status: {phase: Active}
`, `
apiVersion: v1
kind: Namespace
metadata: {name: ns}
`},
		{"a Deployment loses its revision", `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
  annotations: {deployment.kubernetes.io/revision: "3"}
spec: {replicas: 2}
`, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec: {replicas: 2}
`},
		{"a claim forgets its volume", `
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  annotations: {pv.kubernetes.io/bind-completed: "yes", volume.kubernetes.io/selected-node: n1}
spec: {volumeName: pvc-123, resources: {requests: {storage: 1Gi}}}
`, `
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {resources: {requests: {storage: 1Gi}}}
`},
		{"a Job loses its generated selector", `
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  selector: {matchLabels: {batch.kubernetes.io/controller-uid: u}}
  template:
    metadata: {labels: {batch.kubernetes.io/controller-uid: u, controller-uid: u, job-name: j, app: j}}
`, `
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  template:
    metadata: {labels: {job-name: j, app: j}}
`},
		{"a Job with a manual selector keeps it", `
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  manualSelector: true
  selector: {matchLabels: {app: j}}
`, `
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  manualSelector: true
  selector: {matchLabels: {app: j}}
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := obj(t, tc.in)
			clean(u)
			if diff := cmp.Diff(obj(t, tc.want).Object, u.Object); diff != "" {
				t.Errorf("clean (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSkipReason(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		skip     bool
	}{
		{"a pod of a ReplicaSet", `{apiVersion: v1, kind: Pod, metadata: {name: p, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: rs, uid: u, controller: true}]}}`, true},
		{"a pod with an owner that is no controller", `{apiVersion: v1, kind: Pod, metadata: {name: p, ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: c, uid: u}]}}`, false},
		{"a bare pod", `{apiVersion: v1, kind: Pod, metadata: {name: p}}`, false},
		{"a token", `{apiVersion: v1, kind: Secret, metadata: {name: t}, type: kubernetes.io/service-account-token}`, true},
		{"an opaque secret", `{apiVersion: v1, kind: Secret, metadata: {name: t}, type: Opaque}`, false},
		{"the cluster's CA", `{apiVersion: v1, kind: ConfigMap, metadata: {name: kube-root-ca.crt}}`, true},
		{"a ConfigMap", `{apiVersion: v1, kind: ConfigMap, metadata: {name: settings}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := skipReason(obj(t, tc.in)) != ""; got != tc.skip {
				t.Errorf("skipped = %v, want %v", got, tc.skip)
			}
		})
	}
}

func TestExportable(t *testing.T) {
	rw := []string{"create", "delete", "get", "list", "patch", "update", "watch"}
	for _, tc := range []struct {
		gr    schema.GroupResource
		name  string
		verbs []string
		want  bool
	}{
		{schema.GroupResource{Resource: "configmaps"}, "configmaps", rw, true},
		{schema.GroupResource{Group: "apps", Resource: "deployments"}, "deployments", rw, true},
		{schema.GroupResource{Group: "example.test", Resource: "widgets"}, "widgets", rw, true},
		{schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "rolebindings"}, "rolebindings", rw, true},
		{schema.GroupResource{Resource: "pods"}, "pods/log", []string{"get"}, false},
		{schema.GroupResource{Resource: "events"}, "events", rw, false},
		{schema.GroupResource{Group: "events.k8s.io", Resource: "events"}, "events", rw, false},
		{schema.GroupResource{Resource: "endpoints"}, "endpoints", rw, false},
		{schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"}, "endpointslices", rw, false},
		{schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "leases", rw, false},
		{schema.GroupResource{Resource: "bindings"}, "bindings", []string{"create"}, false},
		{schema.GroupResource{Group: "authorization.k8s.io", Resource: "localsubjectaccessreviews"}, "localsubjectaccessreviews", []string{"create"}, false},
		{schema.GroupResource{Group: "metrics.k8s.io", Resource: "pods"}, "pods", []string{"get", "list"}, false},
		{schema.GroupResource{Group: "tend.dev", Resource: "components"}, "components", rw, false},
	} {
		t.Run(tc.gr.String()+"/"+tc.name, func(t *testing.T) {
			r := metav1.APIResource{Name: tc.name, Namespaced: true, Verbs: tc.verbs}
			if got := exportable(tc.gr, r); got != tc.want {
				t.Errorf("exportable = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFileAndOrder(t *testing.T) {
	if got, want := File(schema.GroupResource{Resource: "namespaces"}, "", "shop"), "shop/namespace.yaml"; got != want {
		t.Errorf("File(namespace) = %q, want %q", got, want)
	}
	if got, want := File(schema.GroupResource{Resource: "secrets"}, "shop", "db"), "shop/secrets/db.yaml"; got != want {
		t.Errorf("File(secret) = %q, want %q", got, want)
	}
	if got, want := File(schema.GroupResource{Group: "apps", Resource: "deployments"}, "shop", "web"), "shop/deployments.apps/web.yaml"; got != want {
		t.Errorf("File(deployment) = %q, want %q", got, want)
	}

	id := func(group, kind, ns, name string) kube.ID {
		return kube.ID{Namespace: ns, Name: name, GroupKind: schema.GroupKind{Group: group, Kind: kind}}
	}
	ids := []kube.ID{
		id("example.test", "Widget", "a", "w"),
		id("apps", "Deployment", "a", "web"),
		id("", "Service", "a", "web"),
		id("", "ConfigMap", "b", "x"),
		id("", "ConfigMap", "a", "x"),
		id("", "Secret", "a", "s"),
		id("", "Namespace", "", "b"),
		id("", "Namespace", "", "a"),
		id("", "ServiceAccount", "a", "robot"),
		id("batch", "CronJob", "a", "c"),
		id("acme.test", "Thing", "a", "t"),
	}
	sort.SliceStable(ids, func(i, j int) bool { return less(ids[i], ids[j]) })
	want := []kube.ID{
		id("", "Namespace", "", "a"),
		id("", "Namespace", "", "b"),
		id("", "ServiceAccount", "a", "robot"),
		id("", "Secret", "a", "s"),
		id("", "ConfigMap", "a", "x"),
		id("", "ConfigMap", "b", "x"),
		id("", "Service", "a", "web"),
		id("apps", "Deployment", "a", "web"),
		id("batch", "CronJob", "a", "c"),
		id("acme.test", "Thing", "a", "t"),
		id("example.test", "Widget", "a", "w"),
	}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}
