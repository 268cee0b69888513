package objects

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/yaml"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
)

// ExportResult says what an export wrote.
type ExportResult struct {
	// Objects is the number of manifests written, Namespaces included.
	Objects int
	// Kinds counts the manifests by kind: Kind in the core group,
	// Kind.group in others.
	Kinds map[string]int
	// Skipped counts the objects that matched the selector but were left
	// out because the cluster recreates them (see the package doc).
	Skipped int
}

// listConcurrency bounds the parallel list requests of an export.
const listConcurrency = 4

var namespaceGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// resourceType is a namespaced resource type an export lists.
type resourceType struct {
	gvr  schema.GroupVersionResource
	kind string
}

// exported is an object and the path of its manifest.
type exported struct {
	u    *unstructured.Unstructured
	file string
}

// Export writes the objects of the given namespaces that match selector (a
// label selector, "" for every object) as YAML manifests under dir, one
// file per object, and each Namespace object itself, whatever the
// selector. Every namespaced resource type the API server lists and
// creates is exported in its preferred version, custom resources
// included. dir must be empty or absent.
//
// Nothing is written unless every list succeeded; a backup that silently
// lacks a resource type would be found out only at restore.
func Export(ctx context.Context, c *kube.Client, namespaces []string, selector string, dir string) (*ExportResult, error) {
	if len(namespaces) == 0 {
		return nil, errors.New("export objects: no namespaces given")
	}
	if _, err := labels.Parse(selector); err != nil {
		return nil, model.WithHint(fmt.Errorf("export objects: selector %q: %w", selector, err), `write a label selector, e.g. "app=shop,tier!=cache"`)
	}
	if err := emptyDir(dir); err != nil {
		return nil, fmt.Errorf("export objects: %w", err)
	}
	types, err := discover(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("export objects: %w", err)
	}
	namespaces = slices.Compact(slices.Sorted(slices.Values(namespaces)))

	var (
		mu      sync.Mutex
		objs    []exported
		skipped int
	)
	keep := func(u *unstructured.Unstructured, file string) {
		mu.Lock()
		defer mu.Unlock()
		objs = append(objs, exported{u: u, file: file})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(listConcurrency)
	for _, ns := range namespaces {
		g.Go(func() error {
			u, err := c.Dynamic.Resource(namespaceGVR).Get(gctx, ns, metav1.GetOptions{})
			if err != nil {
				return listError(c, "read namespace "+ns, err)
			}
			u.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"})
			clean(u)
			keep(u, File(namespaceGVR.GroupResource(), "", ns))
			return nil
		})
		for _, t := range types {
			g.Go(func() error {
				n, err := list(gctx, c, t, ns, selector, keep)
				mu.Lock()
				skipped += n
				mu.Unlock()
				return err
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("export objects: %w", err)
	}

	sortObjects(objs, func(e exported) *unstructured.Unstructured { return e.u })
	res := &ExportResult{Kinds: map[string]int{}, Skipped: skipped}
	for _, e := range objs {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("export objects: %w", err)
		}
		if err := writeManifest(dir, e); err != nil {
			return res, fmt.Errorf("export objects: %w", err)
		}
		res.Objects++
		res.Kinds[kindName(e.u.GroupVersionKind().GroupKind())]++
	}
	return res, nil
}

// discover returns the namespaced resource types to export, in their
// preferred versions, ordered by group and resource.
func discover(ctx context.Context, c *kube.Client) ([]resourceType, error) {
	dc := discovery.ToDiscoveryInterfaceWithContext(c.Typed.Discovery())
	lists, err := dc.ServerPreferredNamespacedResourcesWithContext(ctx)
	if err != nil {
		if failed, ok := discovery.GroupDiscoveryFailedErrorGroups(err); ok {
			var names []string
			for gv := range failed {
				names = append(names, gv.String())
			}
			sort.Strings(names)
			return nil, model.WithHint(fmt.Errorf("discover resource types: %w", err),
				"the API server cannot list %s (an aggregated API whose service is down?); an export without them would be incomplete", strings.Join(names, ", "))
		}
		if kube.IsUnreachable(err) {
			return nil, kube.Unreachable(c.Config.Host, err)
		}
		return nil, fmt.Errorf("discover resource types: %w", err)
	}
	var out []resourceType
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			return nil, fmt.Errorf("discover resource types: %w", err)
		}
		for _, r := range l.APIResources {
			if exportable(gv.WithResource(r.Name).GroupResource(), r) {
				out = append(out, resourceType{gvr: gv.WithResource(r.Name), kind: r.Kind})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].gvr, out[j].gvr
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		return a.Resource < b.Resource
	})
	return out, nil
}

// list lists the objects of type t in namespace ns that match selector,
// page by page, hands those to keep to keep, and returns how many it
// skipped.
func list(ctx context.Context, c *kube.Client, t resourceType, ns, selector string, keep func(*unstructured.Unstructured, string)) (int, error) {
	skipped := 0
	opts := metav1.ListOptions{LabelSelector: selector, Limit: 500}
	for {
		l, err := c.Dynamic.Resource(t.gvr).Namespace(ns).List(ctx, opts)
		if apierrors.IsNotFound(err) {
			return skipped, nil // the type went away since discovery (a deleted CRD)
		}
		if err != nil {
			return skipped, listError(c, fmt.Sprintf("list %s in %s", t.gvr.GroupResource(), ns), err)
		}
		for i := range l.Items {
			u := &l.Items[i]
			u.SetGroupVersionKind(t.gvr.GroupVersion().WithKind(t.kind))
			if skipReason(u) != "" {
				skipped++
				continue
			}
			clean(u)
			keep(u, File(t.gvr.GroupResource(), ns, u.GetName()))
		}
		if l.GetContinue() == "" {
			return skipped, nil
		}
		opts.Continue = l.GetContinue()
	}
}

func listError(c *kube.Client, op string, err error) error {
	switch {
	case kube.IsUnreachable(err):
		return kube.Unreachable(c.Config.Host, err)
	case apierrors.IsForbidden(err):
		return model.WithHint(fmt.Errorf("%s: %w", op, err), "the backup's credentials must be allowed to get and list every resource type of the namespaces it backs up")
	case apierrors.IsNotFound(err):
		return model.WithHint(fmt.Errorf("%s: %w", op, err), "create the namespace or remove it from the backup")
	}
	return fmt.Errorf("%s: %w", op, err)
}

// emptyDir creates dir, or checks that it is empty, so that an export
// never mixes with manifests of an earlier one (a restore would apply them).
func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return model.WithHint(fmt.Errorf("%s is not empty", dir), "export into a new or empty directory")
	}
	return nil
}

// writeManifest writes one object, readable by its owner only.
func writeManifest(dir string, e exported) error {
	data, err := yaml.Marshal(e.u.Object)
	if err != nil {
		return fmt.Errorf("encode %s: %w", e.file, err)
	}
	p := filepath.Join(dir, e.file)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
