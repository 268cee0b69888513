package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/render"
)

// Request is one component to apply.
type Request struct {
	Cluster, Component string
	// Namespace is the default for namespaced objects that name none.
	Namespace string
	Force     bool
	Prune     bool
	Wait      bool
	Timeout   time.Duration
	Objects   []render.Object
	// Inventory is what the last apply left.
	Inventory Inventory
	// Pending lists, for Diff, the objects other components of the same
	// change will create: Namespaces by name and custom kinds as Kind.group.
	// Their dependents cannot be dry-run yet and show as created.
	Pending map[string]bool
	// KeepLabels applies the objects' labels as they are: tend's cluster
	// and component labels are neither set nor changed. Restores use it,
	// so that restored objects keep the component they were backed up
	// from and objects tend did not create stay without tend's labels.
	KeepLabels bool
}

// Change is what happened to one object.
type Change struct {
	Object  string       `json:"object"`
	Action  Action       `json:"action"`
	Origin  model.Origin `json:"origin,omitzero"`
	Drift   bool         `json:"drift,omitempty"`
	Manager string       `json:"manager,omitempty"`
	Reason  string       `json:"reason,omitempty"`
	Error   string       `json:"error,omitempty"`
	ID      ID           `json:"-"`
}

// ChangeSet is the result of applying a component. On error it holds what
// was done before the error, and an inventory that still lists every object
// tend may have created, so nothing is orphaned.
type ChangeSet struct {
	Changes   []Change  `json:"changes"`
	Inventory Inventory `json:"-"`
}

// Count returns how many changes have action a.
func (cs *ChangeSet) Count(a Action) int {
	n := 0
	for _, c := range cs.Changes {
		if c.Action == a {
			n++
		}
	}
	return n
}

// Drifted returns the drift corrections.
func (cs *ChangeSet) Drifted() []Change {
	var out []Change
	for _, c := range cs.Changes {
		if c.Drift && c.Action != Failed {
			out = append(out, c)
		}
	}
	return out
}

// ObjectError is a failure on one object, with where it came from in git.
type ObjectError struct {
	Object string
	Origin model.Origin
	Op     string
	Err    error
	Hint   string
}

func (e *ObjectError) Error() string {
	where := ""
	if e.Origin.File != "" {
		where = " (" + e.Origin.String() + ")"
	}
	return fmt.Sprintf("%s %s%s: %v", e.Op, e.Object, where, e.Err)
}
func (e *ObjectError) Unwrap() error     { return e.Err }
func (e *ObjectError) ErrorHint() string { return e.Hint }

// Applier applies components. It is safe for concurrent use by several
// components at once.
type Applier struct {
	C    *Client
	Live Live
	// Concurrency bounds the parallel requests of one component.
	Concurrency int
}

type item struct {
	obj     render.Object
	u       *unstructured.Unstructured // prepared copy
	id      ID
	mapping *meta.RESTMapping
	hash    string
	prev    *Entry
	dec     Decision
}

// Prepare copies o, sets tend's labels (unless req.KeepLabels) and the
// default namespace, and resolves its REST mapping.
func (a *Applier) prepare(req *Request, o render.Object) (*item, error) {
	u := o.DeepCopy()
	m, err := a.C.Mapping(u.GroupVersionKind())
	if err != nil {
		return nil, &ObjectError{Op: "map", Object: o.ID(), Origin: o.Origin, Err: err, Hint: model.HintOf(err)}
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if u.GetNamespace() == "" {
			ns := req.Namespace
			if ns == "" {
				ns = "default"
			}
			u.SetNamespace(ns)
		}
	} else {
		u.SetNamespace("")
	}
	if !req.KeepLabels {
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelCluster] = req.Cluster
		labels[LabelComponent] = req.Component
		u.SetLabels(labels)
	}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return &item{obj: o, u: u, id: IDOf(u), mapping: m, hash: desiredHash(u)}, nil
}

// Apply applies req: stage 0 (CRDs, Namespaces) then the rest, then prunes,
// then waits. It stops at the first failing stage; nothing is pruned then.
func (a *Applier) Apply(ctx context.Context, req Request) (*ChangeSet, error) {
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	cs := &ChangeSet{}
	prev := req.Inventory.Index()
	// applied keeps the inventory a superset of what may exist in the cluster.
	applied := map[string]Entry{}
	var order []string
	finish := func(err error) (*ChangeSet, error) {
		cs.Inventory = mergeInventory(req.Inventory, order, applied, err == nil, cs)
		return cs, err
	}

	var stage0, stage1 []render.Object
	for _, o := range req.Objects {
		if isStage0(IDOf(o.Unstructured)) {
			stage0 = append(stage0, o)
		} else {
			stage1 = append(stage1, o)
		}
	}
	keep := map[string]bool{}
	for i, stage := range [][]render.Object{stage0, stage1} {
		items, err := a.plan(ctx, &req, stage, prev)
		if err != nil {
			return finish(err)
		}
		for _, it := range items {
			keep[it.id.String()] = true
			order = append(order, it.id.String())
			if !it.dec.Apply {
				e := Entry{ID: it.id.String(), Version: it.u.GroupVersionKind().Version, Hash: it.hash}
				if it.prev != nil {
					e = *it.prev
				}
				applied[e.ID] = e
				cs.Changes = append(cs.Changes, Change{Object: Describe(it.id), ID: it.id, Action: it.dec.Action, Origin: it.obj.Origin, Reason: it.dec.Reason})
			}
		}
		if err := a.applyStage(ctx, items, cs, applied); err != nil {
			return finish(err)
		}
		if i == 0 && len(items) > 0 {
			if err := a.waitStage0(ctx, items); err != nil {
				return finish(err)
			}
			a.C.Mapper.Reset()
		}
	}
	if req.Prune {
		if err := a.prune(ctx, req, keep, cs); err != nil {
			return finish(err)
		}
	}
	if req.Wait {
		if err := a.wait(ctx, req, mergeInventory(req.Inventory, order, applied, true, cs)); err != nil {
			return finish(err)
		}
	}
	return finish(nil)
}

// plan prepares a stage and decides, per object, what to do.
func (a *Applier) plan(ctx context.Context, req *Request, objs []render.Object, prev map[string]Entry) ([]*item, error) {
	items := make([]*item, len(objs))
	var errs []error
	for i, o := range objs {
		it, err := a.prepare(req, o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if e, ok := prev[it.id.String()]; ok {
			it.prev = &e
		}
		items[i] = it
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.concurrency())
	for _, it := range items {
		g.Go(func() error {
			var live *unstructured.Unstructured
			// An object not in the inventory must be applied anyway; don't read it.
			if it.prev != nil {
				l, err := a.Live.Get(gctx, it.mapping, it.u.GetNamespace(), it.u.GetName())
				if err != nil && !apierrors.IsNotFound(err) {
					if IsUnreachable(err) {
						return Unreachable(a.C.Config.Host, err)
					}
					return &ObjectError{Op: "read", Object: Describe(it.id), Origin: it.obj.Origin, Err: err}
				}
				if err == nil {
					live = l
				}
			}
			if live == nil && it.prev == nil && it.u.GetAnnotations()[AnnotationReconcile] == Disabled {
				// Created once if missing; look first so an existing one is left alone.
				l, err := a.Live.Get(gctx, it.mapping, it.u.GetNamespace(), it.u.GetName())
				if err == nil {
					live = l
				}
			}
			it.dec = Decide(it.u, live, it.prev, it.hash, req.Force)
			return nil
		})
	}
	return items, g.Wait()
}

func (a *Applier) concurrency() int {
	if a.Concurrency <= 0 {
		return 8
	}
	return a.Concurrency
}

// applyStage validates every object to write with a server-side dry run,
// and writes only if all pass, so a bad object leaves the stage untouched.
func (a *Applier) applyStage(ctx context.Context, items []*item, cs *ChangeSet, applied map[string]Entry) error {
	var todo []*item
	for _, it := range items {
		if it.dec.Apply {
			todo = append(todo, it)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	var mu sync.Mutex
	var errs []error
	fail := func(it *item, err error) {
		mu.Lock()
		defer mu.Unlock()
		oe := a.objectError("apply", it, err)
		errs = append(errs, oe)
		cs.Changes = append(cs.Changes, Change{Object: Describe(it.id), ID: it.id, Action: Failed, Origin: it.obj.Origin, Error: oe.Err.Error()})
	}
	run := func(dryRun bool) {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(a.concurrency())
		for _, it := range todo {
			g.Go(func() error {
				out, err := a.patch(gctx, it, dryRun)
				if err != nil {
					fail(it, err)
					return nil
				}
				if dryRun {
					return nil
				}
				mu.Lock()
				applied[it.id.String()] = Entry{ID: it.id.String(), Version: it.u.GroupVersionKind().Version, Hash: it.hash, Fields: FieldsHash(out)}
				cs.Changes = append(cs.Changes, Change{Object: Describe(it.id), ID: it.id, Action: it.dec.Action, Origin: it.obj.Origin,
					Drift: it.dec.Drift, Manager: it.dec.Manager, Reason: it.dec.Reason})
				mu.Unlock()
				return nil
			})
		}
		_ = g.Wait()
	}
	// Validate first when the stage changes objects that exist, so a bad
	// manifest never leaves a running app half-updated. A lone object needs
	// no validation (its apply is atomic), and neither does a stage that
	// only creates: a partial create disturbs nothing that runs, and every
	// object created is in the inventory, so the next apply completes or
	// prunes it. This halves the requests of a first install.
	updates := false
	for _, it := range todo {
		if it.dec.Action != Created {
			updates = true
		}
	}
	if len(todo) > 1 && updates {
		run(true)
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	run(false)
	return errors.Join(errs...)
}

func (a *Applier) patch(ctx context.Context, it *item, dryRun bool) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(it.u.Object)
	if err != nil {
		return nil, err
	}
	force := it.dec.Force
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force, FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return a.C.Resource(it.mapping, it.u.GetNamespace()).Patch(ctx, it.u.GetName(), types.ApplyPatchType, data, opts)
}

// objectError explains an API error on one object and what to do about it.
func (a *Applier) objectError(op string, it *item, err error) *ObjectError {
	oe := &ObjectError{Op: op, Object: Describe(it.id), Origin: it.obj.Origin, Err: err}
	switch {
	case apierrors.IsConflict(err):
		oe.Err = fmt.Errorf("field manager conflict: %s", conflictText(err))
		oe.Hint = "another tool owns these fields. Remove them from git, remove them from the other tool, or set `force: true` on the component to take them over"
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		oe.Hint = "the API server rejected the object: fix the manifest at " + it.obj.Origin.String()
	case apierrors.IsForbidden(err):
		oe.Hint = "tend's credentials may not write this object: grant the RBAC permission or drop the object"
	case apierrors.IsNotFound(err):
		oe.Hint = "the namespace may not exist: add a Namespace object to the component or set the component's namespace"
	case IsUnreachable(err):
		oe.Hint = "the cluster is unreachable; tend retries"
	default:
		var status apierrors.APIStatus
		if errors.As(err, &status) {
			oe.Hint = "the API server refused the object: fix the manifest at " + it.obj.Origin.String()
		}
	}
	return oe
}

func conflictText(err error) string {
	s := err.Error()
	if i := strings.Index(s, "conflict with"); i >= 0 {
		return s[i:]
	}
	return s
}

// waitStage0 waits until applied CRDs are Established and Namespaces Active,
// so the objects of the next stage can use them.
func (a *Applier) waitStage0(ctx context.Context, items []*item) error {
	for _, it := range items {
		for {
			u, err := Direct{a.C}.Get(ctx, it.mapping, "", it.u.GetName())
			if err == nil && stage0Ready(u) {
				break
			}
			select {
			case <-ctx.Done():
				return &ObjectError{Op: "wait for", Object: Describe(it.id), Origin: it.obj.Origin, Err: fmt.Errorf("not Established/Active: %w", ctx.Err()),
					Hint: "check the object's status with kubectl describe"}
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func stage0Ready(u *unstructured.Unstructured) bool {
	if u.GetKind() == "Namespace" {
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		return phase == "Active"
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// mergeInventory builds the next inventory: the objects of this apply in
// order, then, unless the apply succeeded (so pruning ran or is off), the
// previous ones not seen now.
func mergeInventory(prev Inventory, order []string, applied map[string]Entry, pruned bool, cs *ChangeSet) Inventory {
	var inv Inventory
	seen := map[string]bool{}
	for _, id := range order {
		if e, ok := applied[id]; ok && !seen[id] {
			inv = append(inv, e)
			seen[id] = true
		}
	}
	deleted := map[string]bool{}
	for _, c := range cs.Changes {
		if c.Action == Deleted || (c.Action == Skipped && c.Reason == "pruning disabled") {
			deleted[c.ID.String()] = true
		}
	}
	for _, e := range prev {
		if seen[e.ID] || deleted[e.ID] {
			continue
		}
		if pruned {
			continue
		}
		inv = append(inv, e)
	}
	return inv
}
