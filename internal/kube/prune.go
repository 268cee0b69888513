package kube

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// prune deletes the objects of the previous inventory that are no longer in
// git, in reverse dependency order: ordinary objects in reverse apply order,
// then Namespaces and CRDs. It deletes only objects whose labels still name
// this component, so an object tend did not create is never touched.
func (a *Applier) prune(ctx context.Context, req Request, keep map[string]bool, cs *ChangeSet) error {
	var later, last []Entry
	for i := len(req.Inventory) - 1; i >= 0; i-- {
		e := req.Inventory[i]
		if keep[e.ID] {
			continue
		}
		id, err := e.ObjID()
		if err != nil {
			continue
		}
		if isStage0(id) {
			last = append(last, e)
		} else {
			later = append(later, e)
		}
	}
	var errs []error
	for _, e := range append(later, last...) {
		id, _ := e.ObjID()
		c := Change{Object: Describe(id), ID: id}
		action, reason, err := a.deleteOwned(ctx, req, id, e.Version)
		c.Action, c.Reason = action, reason
		if err != nil {
			c.Action, c.Error = Failed, err.Error()
			errs = append(errs, &ObjectError{Op: "prune", Object: Describe(id), Err: err, Hint: "tend retries; check RBAC if it keeps failing"})
		}
		if c.Action != "" {
			cs.Changes = append(cs.Changes, c)
		}
	}
	return errors.Join(errs...)
}

func (a *Applier) deleteOwned(ctx context.Context, req Request, id ID, version string) (Action, string, error) {
	m, err := a.C.Mapping(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: version, Kind: id.GroupKind.Kind})
	if err != nil {
		// The kind is gone (its CRD was removed): so is the object.
		return "", "", nil
	}
	live, err := Direct{a.C}.Get(ctx, m, id.Namespace, id.Name)
	if apierrors.IsNotFound(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	l := live.GetLabels()
	if l[LabelCluster] != req.Cluster || l[LabelComponent] != req.Component {
		return Skipped, fmt.Sprintf("not pruned: labels say it belongs to %s/%s now", l[LabelCluster], l[LabelComponent]), nil
	}
	if live.GetAnnotations()[AnnotationPrune] == Disabled {
		return Skipped, "pruning disabled", nil
	}
	if live.GetDeletionTimestamp() != nil {
		return Deleted, "already being deleted", nil
	}
	bg := metav1.DeletePropagationBackground
	uid := live.GetUID()
	err = a.C.Resource(m, id.Namespace).Delete(ctx, id.Name, metav1.DeleteOptions{
		PropagationPolicy: &bg,
		// Delete exactly the object read above, not a namesake created since.
		Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	return Deleted, "removed from git", nil
}
