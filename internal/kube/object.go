// Package kube applies rendered objects to a cluster the way Flux and kubectl
// users expect: server-side apply under tend's field manager, staged (CRDs
// and Namespaces first), only objects that differ are written, an inventory
// per component kept in the cluster for pruning, and kstatus for health.
//
// Planning is pure (plan.go); Applier does the I/O and returns a ChangeSet.
package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/object"
)

// Labels and annotations tend reads or writes on managed objects.
const (
	// FieldManager is tend's server-side apply field manager.
	FieldManager = "tend"
	// LabelCluster and LabelComponent mark objects tend created; prune never
	// deletes an object whose labels do not name the pruning component.
	LabelCluster   = "tend.dev/cluster"
	LabelComponent = "tend.dev/component"
	// AnnotationReconcile set to "disabled" in git: tend creates the object
	// if it is missing and otherwise leaves it alone (no updates, no drift
	// correction).
	AnnotationReconcile = "tend.dev/reconcile"
	// AnnotationPrune set to "disabled" keeps the object when it leaves git.
	AnnotationPrune = "tend.dev/prune"
	Disabled        = "disabled"
)

// ID identifies an object across API versions.
type ID = object.ObjMetadata

// IDOf returns the ID of u.
func IDOf(u *unstructured.Unstructured) ID {
	return ID{Namespace: u.GetNamespace(), Name: u.GetName(), GroupKind: u.GroupVersionKind().GroupKind()}
}

// Describe formats an ID for people: Kind/ns/name.
func Describe(id ID) string {
	s := id.GroupKind.Kind + "/"
	if id.Namespace != "" {
		s += id.Namespace + "/"
	}
	return s + id.Name
}

// desiredHash is the hash of what tend sends, so an unchanged object in git
// is recognised without asking the API server.
func desiredHash(u *unstructured.Unstructured) string {
	b, _ := json.Marshal(u.Object) // map keys are sorted by encoding/json
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:12])
}

// FieldsHash hashes the field set tend owns on a live object. It changes when
// another manager takes over a field tend set, which is what drift is.
func FieldsHash(live *unstructured.Unstructured) string {
	for _, mf := range live.GetManagedFields() {
		if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.Subresource == "" && mf.FieldsV1 != nil {
			s := sha256.Sum256(mf.FieldsV1.Raw)
			return hex.EncodeToString(s[:12])
		}
	}
	return ""
}

// lastManager names the manager other than tend that touched live last.
func lastManager(live *unstructured.Unstructured) string {
	mfs := live.GetManagedFields()
	sort.SliceStable(mfs, func(i, j int) bool {
		ti, tj := mfs[i].Time, mfs[j].Time
		if ti == nil || tj == nil {
			return tj != nil
		}
		return ti.Before(tj)
	})
	for i := len(mfs) - 1; i >= 0; i-- {
		if mfs[i].Manager != FieldManager {
			return mfs[i].Manager
		}
	}
	return "unknown"
}

// olderThan reports whether resource version a is older than b, when both
// are etcd revisions. Opaque versions compare as not older.
func olderThan(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return err1 == nil && err2 == nil && x < y
}

func isStage0(gk ID) bool {
	return (gk.GroupKind.Group == "apiextensions.k8s.io" && gk.GroupKind.Kind == "CustomResourceDefinition") ||
		(gk.GroupKind.Group == "" && gk.GroupKind.Kind == "Namespace")
}
