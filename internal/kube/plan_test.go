package kube

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func live(managers ...metav1.ManagedFieldsEntry) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "a"}}}
	u.SetManagedFields(managers)
	return u
}

func fields(manager, raw string) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationApply, FieldsV1: &metav1.FieldsV1{Raw: []byte(raw)}}
}

func TestDecide(t *testing.T) {
	desired := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "a"}}}
	disabled := desired.DeepCopy()
	disabled.SetAnnotations(map[string]string{AnnotationReconcile: Disabled})
	ours := live(fields(FieldManager, `{"f:data":{"f:k":{}}}`))
	theirs := live(fields(FieldManager, `{"f:data":{}}`), metav1.ManagedFieldsEntry{Manager: "kubectl-edit", Operation: metav1.ManagedFieldsOperationUpdate})
	entry := &Entry{Hash: "h1", Fields: FieldsHash(ours)}
	tests := []struct {
		name    string
		desired *unstructured.Unstructured
		live    *unstructured.Unstructured
		prev    *Entry
		hash    string
		force   bool
		want    Decision
	}{
		{"new object", desired, nil, nil, "h1", false, Decision{Apply: true, Action: Created}},
		{"new object, component force", desired, nil, nil, "h1", true, Decision{Apply: true, Force: true, Action: Created}},
		{"idle: nothing to do", desired, ours, entry, "h1", false, Decision{Action: Unchanged}},
		{"changed in git", desired, ours, entry, "h2", false, Decision{Apply: true, Action: Configured, Reason: "changed in git"}},
		{"drift by another manager forces back", desired, theirs, entry, "h1", false,
			Decision{Apply: true, Force: true, Drift: true, Manager: "kubectl-edit", Action: Configured, Reason: "changed outside tend"}},
		{"deleted outside tend", desired, nil, entry, "h1", false, Decision{Apply: true, Drift: true, Manager: "deleted", Action: Created, Reason: "deleted outside tend"}},
		{"opt-out leaves a live object alone", disabled, theirs, entry, "h1", false, Decision{Action: Skipped, Reason: "tend.dev/reconcile: disabled"}},
		{"opt-out still creates a missing object", disabled, nil, nil, "h1", false, Decision{Apply: true, Action: Created}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Decide(tc.desired, tc.live, tc.prev, tc.hash, tc.force)); diff != "" {
				t.Error(diff)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	s := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "s"},
		"data": map[string]any{"a": "aHVudGVyMg=="}, "stringData": map[string]any{"b": "hunter2"}}}
	r := Redact(s)
	a, b := r.Object["data"].(map[string]any)["a"], r.Object["stringData"].(map[string]any)["b"]
	if a != b || a == "hunter2" {
		t.Errorf("data and stringData of the same value must redact alike and hide it: %v %v", a, b)
	}
	if s.Object["stringData"].(map[string]any)["b"] != "hunter2" {
		t.Error("Redact modified its input")
	}
}
