package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"tend.dev/tend/internal/model"
)

// Client holds the API clients the engine uses.
type Client struct {
	Config  *rest.Config
	Dynamic dynamic.Interface
	Typed   kubernetes.Interface
	Mapper  meta.ResettableRESTMapper
}

// RESTConfig loads a kubeconfig: the file given, else $KUBECONFIG, else the
// in-cluster config.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		if c, ierr := rest.InClusterConfig(); ierr == nil {
			return c, nil
		}
		return nil, model.WithHint(fmt.Errorf("load kubeconfig: %w", err), "pass --kubeconfig FILE or set KUBECONFIG; `tend dev up` prints one for a local cluster")
	}
	return cfg, nil
}

// NewClient builds the clients. The client-side rate limit is set high
// because tend applies many objects in parallel; the API server's priority
// and fairness is what protects it, as it does for kubectl.
func NewClient(cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS < 500 {
		cfg.QPS, cfg.Burst = 500, 1000
	}
	cfg.UserAgent = "tend"
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	typed, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{Config: cfg, Dynamic: dyn, Typed: typed,
		Mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Ping checks the API server answers, so an unreachable cluster is one
// clear error instead of one per object.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Typed.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return Unreachable(c.Config.Host, err)
	}
	return nil
}

// Unreachable wraps a connection error with a hint.
func Unreachable(host string, err error) error {
	return model.WithHint(fmt.Errorf("cluster %s unreachable: %w", host, err),
		"check --kubeconfig/KUBECONFIG and that the API server runs; `tend dev up` starts a local one")
}

// IsUnreachable reports connection-level failures.
func IsUnreachable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout()) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "unreachable")
}

// Mapping resolves the REST mapping of u's kind, with a hint when the kind
// is unknown (usually a custom resource whose CRD is missing).
func (c *Client) Mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := c.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil && meta.IsNoMatchError(err) {
		c.Mapper.Reset()
		m, err = c.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, model.WithHint(fmt.Errorf("the cluster does not know kind %s in %s", gvk.Kind, gvk.GroupVersion()),
				"if it is a custom resource, add its CustomResourceDefinition to this component or to a component in dependsOn")
		}
		return nil, err
	}
	return m, nil
}

// Resource returns the dynamic client for a mapping and namespace.
func (c *Client) Resource(m *meta.RESTMapping, ns string) dynamic.ResourceInterface {
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.Dynamic.Resource(m.Resource).Namespace(ns)
	}
	return c.Dynamic.Resource(m.Resource)
}

// Live reads objects. The one-shot apply reads the API server; the agent
// reads its watch cache, so an idle reconcile asks the server nothing.
type Live interface {
	Get(ctx context.Context, m *meta.RESTMapping, namespace, name string) (*unstructured.Unstructured, error)
}

// Direct reads from the API server.
type Direct struct{ C *Client }

// Get returns the object or a NotFound error.
func (d Direct) Get(ctx context.Context, m *meta.RESTMapping, ns, name string) (*unstructured.Unstructured, error) {
	return d.C.Resource(m, ns).Get(ctx, name, metav1.GetOptions{})
}

// IgnoreNotFound returns nil for NotFound errors.
func IgnoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
