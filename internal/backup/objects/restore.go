package objects

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/render"
)

// DefaultWaitTimeout bounds a restore that waits and sets no timeout.
const DefaultWaitTimeout = 5 * time.Minute

// RestoreOptions say where a restore puts the objects, and whether it
// waits for them.
type RestoreOptions struct {
	// Cluster, when set, replaces the tend.dev/cluster label of the
	// objects that carry one: a backup of one Cluster restored into
	// another, whose agent then manages them. Objects without tend's
	// labels stay without.
	Cluster string
	// Namespace restores every namespaced object into this namespace
	// instead of its own. The backup's Namespace objects are skipped; this
	// namespace is created when it is missing and left as it is otherwise.
	Namespace string
	// Wait waits until every restored object is Current (kstatus).
	Wait bool
	// Timeout bounds the whole restore, waiting included (default
	// DefaultWaitTimeout when Wait is set, none otherwise).
	Timeout time.Duration
}

// RestoreResult says what a restore did.
type RestoreResult struct {
	// Changes has one entry per object, in restore order.
	Changes []kube.Change `json:"changes"`
}

// Count returns how many changes have action a.
func (r *RestoreResult) Count(a kube.Action) int {
	n := 0
	for _, c := range r.Changes {
		if c.Action == a {
			n++
		}
	}
	return n
}

// group is the objects of one component, or of none: applied together,
// under that component's name, with their labels as they are.
type group struct {
	cluster, component string
	objects            []render.Object
}

// Restore reads the manifests Export wrote under dir and applies them with
// a, through server-side apply under tend's field manager: the Namespaces
// first, then the rest. Objects keep the tend labels they were backed up
// with (so tend's components own them as before) and objects without
// them gain none. Nothing is deleted.
//
// Every manifest is read, and every kind resolved, before anything is
// applied: a bad file or an unknown kind changes nothing. Errors name the
// object and its file relative to dir. On error the result holds what was
// done before it.
func Restore(ctx context.Context, a *kube.Applier, dir string, opts RestoreOptions) (*RestoreResult, error) {
	objs, err := Read(dir)
	if err != nil {
		return nil, fmt.Errorf("restore objects: %w", err)
	}
	timeout := opts.Timeout
	if timeout <= 0 && opts.Wait {
		timeout = DefaultWaitTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if a.Live == nil {
		cp := *a
		cp.Live = kube.Direct{C: a.C}
		a = &cp
	}
	res := &RestoreResult{}
	namespaces, rest, skipped, err := plan(ctx, a.C, objs, opts)
	if err != nil {
		return nil, fmt.Errorf("restore objects: %w", err)
	}
	res.Changes = append(res.Changes, skipped...)
	var applied kube.Inventory
	for _, stage := range [][]*group{namespaces, rest} {
		for _, g := range stage {
			cs, err := a.Apply(ctx, kube.Request{Cluster: g.cluster, Component: g.component, KeepLabels: true,
				Objects: g.objects, Inventory: present(g.objects)})
			if cs != nil {
				res.add(cs.Changes)
				applied = append(applied, cs.Inventory...)
			}
			if err != nil {
				res.sort()
				return res, fmt.Errorf("restore objects: %w", err)
			}
		}
	}
	res.sort()
	if opts.Wait {
		if err := waitCurrent(ctx, a, applied); err != nil {
			return res, fmt.Errorf("restore objects: %w", err)
		}
	}
	return res, nil
}

// present lists objs as an inventory without hashes, so that the applier
// reads each live object first: one that exists is reported configured,
// not created.
func present(objs []render.Object) kube.Inventory {
	inv := make(kube.Inventory, 0, len(objs))
	for _, o := range objs {
		inv = append(inv, kube.Entry{ID: kube.IDOf(o.Unstructured).String(), Version: o.GroupVersionKind().Version})
	}
	return inv
}

func (r *RestoreResult) add(cs []kube.Change) {
	for _, c := range cs {
		if c.Action == kube.Configured {
			c.Reason = "existed: restored over it"
		}
		r.Changes = append(r.Changes, c)
	}
}

func (r *RestoreResult) sort() {
	sort.SliceStable(r.Changes, func(i, j int) bool { return less(r.Changes[i].ID, r.Changes[j].ID) })
}

// plan resolves every object's kind, moves objects into opts.Namespace,
// relabels them for opts.Cluster, and groups them by component: the
// Namespaces, then the rest. It writes nothing.
func plan(ctx context.Context, c *kube.Client, objs []render.Object, opts RestoreOptions) (namespaces, rest []*group, skipped []kube.Change, err error) {
	var errs []error
	seen := map[kube.ID]model.Origin{}
	nsGroups, restGroups := map[[2]string]*group{}, map[[2]string]*group{}
	add := func(groups map[[2]string]*group, o render.Object) {
		l := o.GetLabels()
		k := [2]string{l[kube.LabelCluster], l[kube.LabelComponent]}
		g, ok := groups[k]
		if !ok {
			g = &group{cluster: k[0], component: k[1]}
			groups[k] = g
		}
		g.objects = append(g.objects, o)
	}
	for _, o := range objs {
		m, err := c.Mapping(o.GroupVersionKind())
		if err != nil && kube.IsUnreachable(err) {
			return nil, nil, nil, kube.Unreachable(c.Config.Host, err)
		}
		if err != nil {
			errs = append(errs, &kube.ObjectError{Op: "map", Object: o.ID(), Origin: o.Origin, Err: err, Hint: model.HintOf(err)})
			continue
		}
		isNamespace := o.GroupVersionKind().GroupKind() == schema.GroupKind{Kind: "Namespace"}
		if opts.Namespace != "" && isNamespace {
			skipped = append(skipped, kube.Change{Object: kube.Describe(kube.IDOf(o.Unstructured)), ID: kube.IDOf(o.Unstructured),
				Action: kube.Skipped, Origin: o.Origin, Reason: "restoring into namespace " + opts.Namespace})
			continue
		}
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			switch {
			case opts.Namespace != "":
				moveTo(o.Unstructured, opts.Namespace)
			case o.GetNamespace() == "":
				errs = append(errs, &kube.ObjectError{Op: "restore", Object: o.ID(), Origin: o.Origin, Err: errors.New("metadata.namespace is missing"),
					Hint: "set metadata.namespace in the manifest, or restore into one namespace"})
				continue
			}
		} else {
			o.SetNamespace("")
		}
		if l := o.GetLabels(); opts.Cluster != "" && l[kube.LabelCluster] != "" {
			l[kube.LabelCluster] = opts.Cluster
			o.SetLabels(l)
		}
		id := kube.IDOf(o.Unstructured)
		if prev, ok := seen[id]; ok {
			errs = append(errs, &kube.ObjectError{Op: "restore", Object: kube.Describe(id), Origin: o.Origin, Err: fmt.Errorf("also in %s", prev),
				Hint: "two namespaces of the backup hold an object of this name: restore them into namespaces of their own"})
			continue
		}
		seen[id] = o.Origin
		if isNamespace {
			add(nsGroups, o)
		} else {
			add(restGroups, o)
		}
	}
	if len(errs) > 0 {
		return nil, nil, nil, errors.Join(errs...)
	}
	if ns := opts.Namespace; ns != "" {
		// Created when missing; an existing one is not applied over,
		// which would take its labels from the component that owns it.
		_, err := c.Typed.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		switch {
		case err == nil:
			id := kube.ID{Name: ns, GroupKind: schema.GroupKind{Kind: "Namespace"}}
			skipped = append(skipped, kube.Change{Object: kube.Describe(id), ID: id, Action: kube.Unchanged, Reason: "exists"})
		case kube.IgnoreNotFound(err) == nil:
			u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
			add(nsGroups, render.Object{Unstructured: u})
		case kube.IsUnreachable(err):
			return nil, nil, nil, kube.Unreachable(c.Config.Host, err)
		default:
			return nil, nil, nil, fmt.Errorf("read namespace %s: %w", ns, err)
		}
	}
	return sorted(nsGroups), sorted(restGroups), skipped, nil
}

// moveTo puts a namespaced object into namespace ns, with the references
// to its old namespace that RBAC needs: a RoleBinding's ServiceAccount
// subjects of that namespace move along.
func moveTo(u *unstructured.Unstructured, ns string) {
	old := u.GetNamespace()
	u.SetNamespace(ns)
	if u.GroupVersionKind().GroupKind() != (schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}) {
		return
	}
	subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
	for _, s := range subjects {
		if m, ok := s.(map[string]any); ok && m["kind"] == "ServiceAccount" && m["namespace"] == old {
			m["namespace"] = ns
		}
	}
	if subjects != nil {
		_ = unstructured.SetNestedSlice(u.Object, subjects, "subjects")
	}
}

func sorted(groups map[[2]string]*group) []*group {
	out := make([]*group, 0, len(groups))
	for _, g := range groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].cluster != out[j].cluster {
			return out[i].cluster < out[j].cluster
		}
		return out[i].component < out[j].component
	})
	return out
}

// Read reads the manifests of an export under dir, in restore order:
// Namespaces first, then by kind. It reads every file and reports every
// bad one at once, each by its path relative to dir.
func Read(dir string) ([]render.Object, error) {
	var objs []render.Object
	var errs model.Errors
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || (filepath.Ext(p) != ".yaml" && filepath.Ext(p) != ".yml") {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, err := render.Decode(rel, data)
		if err != nil {
			errs = append(errs, asErrors(rel, err)...)
			return nil
		}
		if len(got) == 0 {
			errs = append(errs, &model.Error{Origin: model.Origin{File: rel}, Msg: "no object in the file", Hint: "an export writes one object per file; remove the file"})
		}
		for _, o := range got {
			switch {
			case o.GetAPIVersion() == "" || o.GetKind() == "" || o.GetName() == "":
				errs = append(errs, &model.Error{Origin: o.Origin, Object: o.ID(), Msg: "not a Kubernetes object: apiVersion, kind and metadata.name are required",
					Hint: "restore manifests written by an export"})
			default:
				objs = append(objs, o)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if len(objs) == 0 {
		return nil, model.WithHint(fmt.Errorf("no manifests in %s", dir), "restore the directory an export wrote")
	}
	sortObjects(objs, func(o render.Object) *unstructured.Unstructured { return o.Unstructured })
	return objs, nil
}

func asErrors(file string, err error) model.Errors {
	var es model.Errors
	var e *model.Error
	switch {
	case errors.As(err, &es):
		return es
	case errors.As(err, &e):
		return model.Errors{e}
	}
	return model.Errors{{Origin: model.Origin{File: file}, Msg: err.Error()}}
}

// waitCurrent polls the objects of inv until kstatus says every one is
// Current, one Failed, or ctx ends.
func waitCurrent(ctx context.Context, a *kube.Applier, inv kube.Inventory) error {
	var pending []kube.Health
	for {
		hs, err := a.Health(ctx, inv)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("wait: %w", err)
		}
		if err == nil {
			pending = hs
		}
		for _, h := range pending {
			if h.Status == status.FailedStatus {
				return model.WithHint(fmt.Errorf("wait: %s failed: %s", h.Object, h.Message), "see the object's events with kubectl describe")
			}
		}
		if err == nil && len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return model.WithHint(fmt.Errorf("wait: timed out with %s", describe(pending)),
				"raise the restore's timeout, or check why these objects do not become ready (kubectl describe)")
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func describe(hs []kube.Health) string {
	var parts []string
	for i, h := range hs {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(hs)-5))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %s (%s)", h.Object, h.Status, h.Message))
	}
	if len(parts) == 0 {
		return "nothing read yet"
	}
	return strings.Join(parts, "; ")
}
