package kube

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Action is what happened, or will happen, to one object.
type Action string

// Actions, in the words kubectl and Flux users know.
const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
	Deleted    Action = "deleted"
	Skipped    Action = "skipped"
	Failed     Action = "failed"
)

// Decision is the plan for one object: whether to apply it and how.
type Decision struct {
	Apply bool
	// Force takes fields back from other managers: only to undo drift on
	// fields tend owned, or when the component sets force.
	Force bool
	// Drift says the live object no longer matches what tend applied.
	Drift   bool
	Manager string // who drifted it, or "deleted"
	Action  Action // the action if the apply succeeds
	Reason  string
}

// Decide plans one object from its desired state, the live object (nil when
// absent) and the inventory entry from the last apply. It is pure: the whole
// zero-write idle reconcile rests on it.
func Decide(desired, live *unstructured.Unstructured, prev *Entry, hash string, componentForce bool) Decision {
	disabled := desired.GetAnnotations()[AnnotationReconcile] == Disabled
	switch {
	case live == nil && prev != nil && prev.Hash == hash:
		return Decision{Apply: true, Force: componentForce, Drift: true, Manager: "deleted", Action: Created, Reason: "deleted outside tend"}
	case live == nil:
		return Decision{Apply: true, Force: componentForce, Action: Created}
	case disabled:
		return Decision{Action: Skipped, Reason: AnnotationReconcile + ": " + Disabled}
	case prev == nil || prev.Hash != hash:
		return Decision{Apply: true, Force: componentForce, Action: Configured, Reason: "changed in git"}
	case FieldsHash(live) != prev.Fields:
		return Decision{Apply: true, Force: true, Drift: true, Manager: lastManager(live), Action: Configured, Reason: "changed outside tend"}
	}
	return Decision{Action: Unchanged}
}
