package kube

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/pmezard/go-difflib/difflib"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/render"
)

// ObjectDiff is what an apply would change on one object.
type ObjectDiff struct {
	Object string       `json:"object"`
	Action Action       `json:"action"`
	Origin model.Origin `json:"origin,omitzero"`
	Drift  bool         `json:"drift,omitempty"`
	// Diff is a unified diff of the live object against the result of a
	// server-side dry run, with Secret values redacted.
	Diff string `json:"diff"`
}

// Diff computes, without writing, what applying req would change. Objects
// whose inventory entry shows them unchanged are not even dry-run.
func (a *Applier) Diff(ctx context.Context, req Request) ([]ObjectDiff, error) {
	prev := req.Inventory.Index()
	var out []ObjectDiff
	var errs []error
	keep := map[string]bool{}
	pending := Pending(req.Objects)
	for k := range req.Pending {
		pending[k] = true
	}
	for _, o := range req.Objects {
		it, err := a.prepare(&req, o)
		if err != nil {
			gk := o.GroupVersionKind().GroupKind().String()
			if pending[gk] {
				// Its CRD arrives with this change: the object will be created.
				u := o.DeepCopy()
				if u.GetNamespace() == "" && req.Namespace != "" {
					u.SetNamespace(req.Namespace)
				}
				out = append(out, ObjectDiff{Object: Describe(IDOf(u)), Action: Created, Origin: o.Origin, Diff: unified(nil, u, Describe(IDOf(u)))})
				continue
			}
			errs = append(errs, err)
			continue
		}
		keep[it.id.String()] = true
		if e, ok := prev[it.id.String()]; ok {
			it.prev = &e
		}
		live, err := Direct{a.C}.Get(ctx, it.mapping, it.u.GetNamespace(), it.u.GetName())
		if err != nil && !apierrors.IsNotFound(err) {
			if IsUnreachable(err) {
				return nil, Unreachable(a.C.Config.Host, err)
			}
			errs = append(errs, a.objectError("read", it, err))
			continue
		}
		if err != nil {
			live = nil
		}
		it.dec = Decide(it.u, live, it.prev, it.hash, req.Force)
		if !it.dec.Apply {
			continue
		}
		if live == nil && it.u.GetNamespace() != "" && pending["Namespace/"+it.u.GetNamespace()] && !a.namespaceExists(ctx, it.u.GetNamespace()) {
			out = append(out, ObjectDiff{Object: Describe(it.id), Action: Created, Origin: o.Origin, Diff: unified(nil, it.u, Describe(it.id))})
			continue
		}
		dry, err := a.patch(ctx, it, true)
		if err != nil {
			errs = append(errs, a.objectError("dry-run apply", it, err))
			continue
		}
		d := unified(live, dry, Describe(it.id))
		if d == "" {
			continue
		}
		out = append(out, ObjectDiff{Object: Describe(it.id), Action: it.dec.Action, Origin: o.Origin, Drift: it.dec.Drift, Diff: d})
	}
	if req.Prune {
		for i := len(req.Inventory) - 1; i >= 0; i-- {
			e := req.Inventory[i]
			if keep[e.ID] {
				continue
			}
			id, err := e.ObjID()
			if err != nil {
				continue
			}
			m, err := a.C.Mapping(id.GroupKind.WithVersion(e.Version))
			if err != nil {
				continue
			}
			live, err := Direct{a.C}.Get(ctx, m, id.Namespace, id.Name)
			if err != nil {
				continue
			}
			l := live.GetLabels()
			if l[LabelCluster] != req.Cluster || l[LabelComponent] != req.Component || live.GetAnnotations()[AnnotationPrune] == Disabled {
				continue
			}
			out = append(out, ObjectDiff{Object: Describe(id), Action: Deleted, Diff: unified(live, nil, Describe(id))})
		}
	}
	return out, errors.Join(errs...)
}

// Pending returns the Namespaces ("Namespace/name") and custom kinds
// ("Kind.group") that objs create.
func Pending(objs []render.Object) map[string]bool {
	out := map[string]bool{}
	for _, o := range objs {
		switch IDOf(o.Unstructured).GroupKind.String() {
		case "Namespace":
			out["Namespace/"+o.GetName()] = true
		case "CustomResourceDefinition.apiextensions.k8s.io":
			g, _, _ := unstructured.NestedString(o.Object, "spec", "group")
			k, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
			out[k+"."+g] = true
		}
	}
	return out
}

func (a *Applier) namespaceExists(ctx context.Context, ns string) bool {
	_, err := a.C.Typed.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	return err == nil
}

// unified diffs two objects as YAML after removing server bookkeeping.
func unified(live, desired *unstructured.Unstructured, name string) string {
	a, b := diffText(live), diffText(desired)
	if a == b {
		return ""
	}
	from, to := "live/"+name, "git/"+name
	if live == nil {
		from = "/dev/null"
	}
	if desired == nil {
		to = "/dev/null"
	}
	s, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(a), B: difflib.SplitLines(b), FromFile: from, ToFile: to, Context: 3,
	})
	return s
}

func diffText(u *unstructured.Unstructured) string {
	if u == nil {
		return ""
	}
	c := Redact(u)
	for _, f := range [][]string{
		{"metadata", "managedFields"}, {"metadata", "resourceVersion"}, {"metadata", "generation"},
		{"metadata", "uid"}, {"metadata", "creationTimestamp"}, {"metadata", "selfLink"}, {"status"},
	} {
		unstructured.RemoveNestedField(c.Object, f...)
	}
	b, err := yaml.Marshal(c.Object)
	if err != nil {
		return fmt.Sprintf("# %v\n", err)
	}
	return string(b)
}

// Redact returns a copy of u in which every Secret value is replaced by
// <redacted: sha256:…> of its decoded bytes, so a change stays visible but
// the value does not. Other kinds are returned as they are.
func Redact(u *unstructured.Unstructured) *unstructured.Unstructured {
	c := u.DeepCopy()
	if c.GetKind() != "Secret" || c.GroupVersionKind().Group != "" {
		return c
	}
	for _, field := range []string{"data", "stringData"} {
		m, ok, _ := unstructured.NestedMap(c.Object, field)
		if !ok {
			continue
		}
		for k, v := range m {
			s, _ := v.(string)
			raw := []byte(s)
			if field == "data" {
				if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
					raw = dec
				}
			}
			sum := sha256.Sum256(raw)
			m[k] = "<redacted: sha256:" + hex.EncodeToString(sum[:])[:16] + ">"
		}
		_ = unstructured.SetNestedMap(c.Object, m, field)
	}
	if ann := c.GetAnnotations(); ann != nil {
		delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
		c.SetAnnotations(ann)
	}
	return c
}

// RedactObjects redacts a rendered list, for `tend build` and logs.
func RedactObjects(objs []render.Object) []render.Object {
	out := make([]render.Object, len(objs))
	for i, o := range objs {
		out[i] = render.Object{Unstructured: Redact(o.Unstructured), Origin: o.Origin}
	}
	return out
}
