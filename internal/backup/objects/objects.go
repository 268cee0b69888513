// Package objects backs up the Kubernetes objects of namespaces as YAML
// manifests, one file per object, and restores them through tend's
// server-side apply engine (kube.Applier), so that restored objects are
// owned by tend's field manager the way its components own them.
//
// An export holds what someone chose, not what the cluster made of it:
// status, server-populated metadata, owner references, allocated Service
// addresses and kubectl's last-applied annotation are stripped. Left out
// are what the cluster recreates itself and what is no object: Events,
// Endpoints and EndpointSlices, Leases, objects a controller owns (Pods of
// a ReplicaSet, ReplicaSets of a Deployment, Jobs of a CronJob …), service
// account token Secrets, the kube-root-ca.crt ConfigMap, tend's Component
// status objects, and resource types that cannot be listed and created.
// The layout is
//
//	<namespace>/namespace.yaml
//	<namespace>/<resource>.<group>/<name>.yaml   (core group: <resource>/<name>.yaml)
//
// Files are 0600 and directories 0700: an export holds Secrets in plain
// text.
package objects

import (
	"path/filepath"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"tend.dev/tend/internal/kube"
)

// NamespaceFile is the name of a namespace's own manifest in its directory.
const NamespaceFile = "namespace.yaml"

// File returns the path, relative to an export's root, of the manifest of
// object name of resource gr in namespace ns.
func File(gr schema.GroupResource, ns, name string) string {
	if gr.Group == "" && gr.Resource == "namespaces" {
		return filepath.Join(name, NamespaceFile)
	}
	d := gr.Resource
	if gr.Group != "" {
		d += "." + gr.Group
	}
	return filepath.Join(ns, d, name+".yaml")
}

// kindOrder is the order in which kinds are listed and applied, after
// Namespaces: what others refer to comes before what refers to it, as in
// Helm's install order. Kinds not listed follow, by group and kind.
var kindOrder = func() map[schema.GroupKind]int {
	kinds := []schema.GroupKind{
		{Kind: "Namespace"},
		{Kind: "ResourceQuota"},
		{Kind: "LimitRange"},
		{Group: "networking.k8s.io", Kind: "NetworkPolicy"},
		{Group: "policy", Kind: "PodDisruptionBudget"},
		{Kind: "ServiceAccount"},
		{Kind: "Secret"},
		{Kind: "ConfigMap"},
		{Kind: "PersistentVolumeClaim"},
		{Group: "rbac.authorization.k8s.io", Kind: "Role"},
		{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"},
		{Kind: "Service"},
		{Group: "apps", Kind: "DaemonSet"},
		{Kind: "Pod"},
		{Kind: "ReplicationController"},
		{Group: "apps", Kind: "ReplicaSet"},
		{Group: "apps", Kind: "Deployment"},
		{Group: "autoscaling", Kind: "HorizontalPodAutoscaler"},
		{Group: "apps", Kind: "StatefulSet"},
		{Group: "batch", Kind: "Job"},
		{Group: "batch", Kind: "CronJob"},
		{Group: "networking.k8s.io", Kind: "Ingress"},
	}
	m := make(map[schema.GroupKind]int, len(kinds))
	for i, gk := range kinds {
		m[gk] = i
	}
	return m
}()

func rank(gk schema.GroupKind) int {
	if r, ok := kindOrder[gk]; ok {
		return r
	}
	return len(kindOrder)
}

// less orders objects: Namespaces, then kinds by kindOrder, then by group,
// kind, namespace and name.
func less(a, b kube.ID) bool {
	if ra, rb := rank(a.GroupKind), rank(b.GroupKind); ra != rb {
		return ra < rb
	}
	if a.GroupKind.Group != b.GroupKind.Group {
		return a.GroupKind.Group < b.GroupKind.Group
	}
	if a.GroupKind.Kind != b.GroupKind.Kind {
		return a.GroupKind.Kind < b.GroupKind.Kind
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// sortObjects sorts s in place by less.
func sortObjects[T any](s []T, obj func(T) *unstructured.Unstructured) {
	sort.SliceStable(s, func(i, j int) bool { return less(kube.IDOf(obj(s[i])), kube.IDOf(obj(s[j]))) })
}

// kindName names a kind for counts: Kind for the core group, Kind.group
// otherwise, as kubectl does.
func kindName(gk schema.GroupKind) string {
	if gk.Group == "" {
		return gk.Kind
	}
	return gk.Kind + "." + gk.Group
}
