package objects

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// skippedResources are resource types whose objects the cluster makes
// itself, or that are not objects at all.
var skippedResources = map[schema.GroupResource]bool{
	{Resource: "events"}:                                    true,
	{Group: "events.k8s.io", Resource: "events"}:            true,
	{Resource: "endpoints"}:                                 true,
	{Group: "discovery.k8s.io", Resource: "endpointslices"}: true,
	{Resource: "bindings"}:                                  true,
	// tend's status objects: tend writes them, and their inventory lives
	// in the status an export strips.
	{Group: "tend.dev", Resource: "components"}: true,
}

// skippedGroups are API groups none of whose objects are backed up:
// coordination.k8s.io holds Leases and LeaseCandidates, which live only
// as long as the process holding them.
var skippedGroups = map[string]bool{"coordination.k8s.io": true}

// exportable reports whether the objects of a resource type are backed
// up: a namespaced type (not a subresource) that can be listed and
// created, and that the cluster does not fill itself.
func exportable(gr schema.GroupResource, r metav1.APIResource) bool {
	if strings.Contains(r.Name, "/") || !r.Namespaced {
		return false
	}
	if !slices.Contains(r.Verbs, "list") || !slices.Contains(r.Verbs, "create") {
		return false
	}
	// Reviews (TokenReview, SubjectAccessReview …) are questions to the
	// API server, not objects.
	if strings.HasSuffix(gr.Resource, "reviews") {
		return false
	}
	return !skippedResources[gr] && !skippedGroups[gr.Group]
}

// skipReason says why an object is left out of an export, or "" when it
// is exported.
func skipReason(u *unstructured.Unstructured) string {
	if ref := metav1.GetControllerOfNoCopy(u); ref != nil {
		return fmt.Sprintf("owned by %s/%s, which recreates it", ref.Kind, ref.Name)
	}
	gk := u.GroupVersionKind().GroupKind()
	switch {
	case gk == schema.GroupKind{Kind: "Secret"}:
		if t, _, _ := unstructured.NestedString(u.Object, "type"); t == "kubernetes.io/service-account-token" {
			return "service account token: the cluster issues a new one"
		}
	case gk == schema.GroupKind{Kind: "ConfigMap"}:
		if u.GetName() == "kube-root-ca.crt" {
			return "the cluster publishes its CA in every namespace"
		}
	}
	return ""
}

// metadataFields are set by the API server; an object that carries them
// does not apply into another cluster.
var metadataFields = []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
	"selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences"}

// Annotations and labels the cluster or kubectl write, by kind ("" for
// every kind).
var (
	serverAnnotations = map[schema.GroupKind][]string{
		{}:                                  {"kubectl.kubernetes.io/last-applied-configuration"},
		{Group: "apps", Kind: "Deployment"}: {"deployment.kubernetes.io/revision"},
		{Kind: "PersistentVolumeClaim"}: {"pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
			"volume.beta.kubernetes.io/storage-provisioner", "volume.kubernetes.io/storage-provisioner", "volume.kubernetes.io/selected-node"},
	}
	serverLabels = map[schema.GroupKind][]string{
		{Kind: "Namespace"}: {"kubernetes.io/metadata.name"},
	}
)

// clean strips from u, in place, what the API server and controllers
// populate, so that the manifest applies into an empty cluster and holds
// only what someone chose.
func clean(u *unstructured.Unstructured) {
	delete(u.Object, "status")
	if md, ok := u.Object["metadata"].(map[string]any); ok {
		for _, f := range metadataFields {
			delete(md, f)
		}
	}
	gk := u.GroupVersionKind().GroupKind()
	removeKeys(u, "annotations", append(serverAnnotations[schema.GroupKind{}], serverAnnotations[gk]...))
	removeKeys(u, "labels", serverLabels[gk])
	switch gk {
	case schema.GroupKind{Kind: "Namespace"}:
		unstructured.RemoveNestedField(u.Object, "spec", "finalizers")
		removeIfEmpty(u.Object, "spec")
	case schema.GroupKind{Kind: "Service"}:
		// Allocated addresses and ports; "None" makes a headless Service
		// and is the user's choice.
		if ip, _, _ := unstructured.NestedString(u.Object, "spec", "clusterIP"); ip != "None" {
			unstructured.RemoveNestedField(u.Object, "spec", "clusterIP")
			unstructured.RemoveNestedField(u.Object, "spec", "clusterIPs")
		}
		unstructured.RemoveNestedField(u.Object, "spec", "healthCheckNodePort")
	case schema.GroupKind{Kind: "PersistentVolumeClaim"}:
		// The volume it was bound to is not in another cluster; a new
		// one is provisioned.
		unstructured.RemoveNestedField(u.Object, "spec", "volumeName")
	case schema.GroupKind{Kind: "Pod"}:
		unstructured.RemoveNestedField(u.Object, "spec", "nodeName")
	case schema.GroupKind{Group: "batch", Kind: "Job"}:
		// The API server generates a Job's selector from its UID and
		// refuses one it did not generate.
		if manual, _, _ := unstructured.NestedBool(u.Object, "spec", "manualSelector"); !manual {
			unstructured.RemoveNestedField(u.Object, "spec", "selector")
			for _, l := range []string{"controller-uid", "batch.kubernetes.io/controller-uid"} {
				unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "labels", l)
			}
		}
	}
}

// removeKeys deletes keys from metadata.<field> and drops the map when it
// is left empty.
func removeKeys(u *unstructured.Unstructured, field string, keys []string) {
	md, ok := u.Object["metadata"].(map[string]any)
	if !ok {
		return
	}
	m, ok := md[field].(map[string]any)
	if !ok {
		return
	}
	for _, k := range keys {
		delete(m, k)
	}
	if len(m) == 0 {
		delete(md, field)
	}
}

func removeIfEmpty(m map[string]any, field string) {
	if v, ok := m[field].(map[string]any); ok && len(v) == 0 {
		delete(m, field)
	}
}
