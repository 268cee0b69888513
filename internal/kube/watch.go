package kube

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// Watcher keeps a watch cache of the objects tend manages in one cluster
// (selected by label), serves reads from it, and reports every change so
// that drift is corrected the moment it happens, not at the next interval.
type Watcher struct {
	c        *Client
	factory  dynamicinformer.DynamicSharedInformerFactory
	onChange func(u *unstructured.Unstructured, deleted bool)

	mu        sync.Mutex
	ctx       context.Context
	informers map[schema.GroupVersionResource]cache.SharedIndexInformer
}

var _ Live = (*Watcher)(nil)

// NewWatcher watches the objects labelled for cluster. onChange runs on
// every add, update and delete after the cache is updated.
func NewWatcher(c *Client, cluster string, onChange func(u *unstructured.Unstructured, deleted bool)) *Watcher {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.Dynamic, 0, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = LabelCluster + "=" + cluster
	})
	return &Watcher{c: c, factory: f, onChange: onChange, informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{}}
}

// Start sets the context informers run under.
func (w *Watcher) Start(ctx context.Context) {
	w.mu.Lock()
	w.ctx = ctx
	w.mu.Unlock()
}

// strip drops what tend never reads from cached objects: other managers'
// field sets and the last-applied annotation, which are most of an
// object's size.
func strip(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	mfs := u.GetManagedFields()
	for i := range mfs {
		if mfs[i].Manager != FieldManager {
			mfs[i].FieldsV1 = nil
		}
	}
	u.SetManagedFields(mfs)
	if ann := u.GetAnnotations(); ann != nil {
		if _, ok := ann["kubectl.kubernetes.io/last-applied-configuration"]; ok {
			delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
			u.SetAnnotations(ann)
		}
	}
	return u, nil
}

func (w *Watcher) informer(ctx context.Context, gvr schema.GroupVersionResource) (cache.SharedIndexInformer, error) {
	w.mu.Lock()
	inf, ok := w.informers[gvr]
	if !ok {
		if w.ctx == nil {
			w.mu.Unlock()
			return nil, fmt.Errorf("watcher not started")
		}
		inf = w.factory.ForResource(gvr).Informer()
		_ = inf.SetTransform(strip)
		if w.onChange != nil {
			_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
				UpdateFunc: func(_, n any) {
					if u, ok := n.(*unstructured.Unstructured); ok {
						w.onChange(u, false)
					}
				},
				DeleteFunc: func(o any) {
					if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
						o = t.Obj
					}
					if u, ok := o.(*unstructured.Unstructured); ok {
						w.onChange(u, true)
					}
				},
			})
		}
		w.informers[gvr] = inf
		go inf.Run(w.ctx.Done())
	}
	w.mu.Unlock()
	if !inf.HasSynced() {
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if !cache.WaitForCacheSync(sctx.Done(), inf.HasSynced) {
			return nil, fmt.Errorf("watch %s: cache did not sync", gvr)
		}
	}
	return inf, nil
}

// Get reads from the watch cache, starting a watch for the kind if needed.
func (w *Watcher) Get(ctx context.Context, m *meta.RESTMapping, ns, name string) (*unstructured.Unstructured, error) {
	inf, err := w.informer(ctx, m.Resource)
	if err != nil {
		return nil, err
	}
	key := name
	if ns != "" && m.Scope.Name() == meta.RESTScopeNameNamespace {
		key = ns + "/" + name
	}
	obj, exists, err := inf.GetIndexer().GetByKey(key)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, apierrors.NewNotFound(m.Resource.GroupResource(), name)
	}
	return obj.(*unstructured.Unstructured), nil
}

// Count returns the number of cached objects, for metrics and benchmarks.
func (w *Watcher) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, inf := range w.informers {
		n += len(inf.GetIndexer().ListKeys())
	}
	return n
}
