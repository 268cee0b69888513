package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// Namespace holds tend's own objects: the Component status objects.
const Namespace = "tend-system"

// ComponentGVR is the resource of the Component status kind.
var ComponentGVR = schema.GroupVersionResource{Group: "tend.dev", Version: "v1alpha1", Resource: "components"}

// ComponentSpec mirrors the component's settings from git, for kubectl users.
type ComponentSpec struct {
	Cluster   string   `json:"cluster"`
	Path      string   `json:"path"`
	Namespace string   `json:"namespace,omitempty"`
	DependsOn []string `json:"dependsOn,omitempty"`
	Prune     bool     `json:"prune"`
	Wait      bool     `json:"wait"`
}

// ComponentStatus is what tend reports about a component.
type ComponentStatus struct {
	Conditions            []metav1.Condition `json:"conditions,omitempty"`
	LastAppliedRevision   string             `json:"lastAppliedRevision,omitempty"`
	LastAttemptedRevision string             `json:"lastAttemptedRevision,omitempty"`
	LastError             string             `json:"lastError,omitempty"`
	InventoryCount        int                `json:"inventoryCount"`
	Inventory             Inventory          `json:"inventory,omitempty"`
}

// Ready returns the Ready condition, if any.
func (s *ComponentStatus) Ready() *metav1.Condition {
	return meta.FindStatusCondition(s.Conditions, "Ready")
}

// Component is a Component object read from the cluster.
type Component struct {
	Name   string          `json:"name"`
	Spec   ComponentSpec   `json:"spec"`
	Status ComponentStatus `json:"status"`
	// Age of the object.
	Created metav1.Time `json:"created"`
	UID     types.UID   `json:"-"`
}

const crdYAML = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: components.tend.dev
  labels: {app.kubernetes.io/managed-by: tend}
spec:
  group: tend.dev
  scope: Namespaced
  names: {kind: Component, listKind: ComponentList, plural: components, singular: component, shortNames: [tc]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Cluster, type: string, jsonPath: .spec.cluster}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Reason, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].reason'}
    - {name: Revision, type: string, jsonPath: .status.lastAppliedRevision}
    - {name: Objects, type: integer, jsonPath: .status.inventoryCount}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    - {name: Message, type: string, priority: 1, jsonPath: '.status.conditions[?(@.type=="Ready")].message'}
    schema:
      openAPIV3Schema:
        type: object
        description: Component is the status of one component of a tend Cluster, written by tend.
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            properties:
              cluster: {type: string}
              path: {type: string}
              namespace: {type: string}
              dependsOn: {type: array, items: {type: string}}
              prune: {type: boolean}
              wait: {type: boolean}
          status:
            type: object
            properties:
              conditions:
                type: array
                items:
                  type: object
                  required: [type, status, lastTransitionTime, reason, message]
                  properties:
                    type: {type: string}
                    status: {type: string}
                    observedGeneration: {type: integer, format: int64}
                    lastTransitionTime: {type: string, format: date-time}
                    reason: {type: string}
                    message: {type: string}
              lastAppliedRevision: {type: string}
              lastAttemptedRevision: {type: string}
              lastError: {type: string}
              inventoryCount: {type: integer}
              inventory:
                type: array
                items:
                  type: object
                  properties:
                    id: {type: string}
                    v: {type: string}
                    h: {type: string}
                    f: {type: string}
`

// CRD returns the Component CustomResourceDefinition, annotated with the
// hash EnsureSetup compares, so that the copy in tend's own component and
// the one EnsureSetup installs are identical and never undo each other.
func CRD() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(crdYAML), &u.Object); err != nil {
		panic(err)
	}
	u.SetAnnotations(map[string]string{"tend.dev/crd-hash": crdHash})
	return u
}

var crdHash = func() string { s := sha256.Sum256([]byte(crdYAML)); return hex.EncodeToString(s[:8]) }()

// EnsureSetup installs the Component CRD and tend's namespace, writing only
// when they are missing or outdated.
func (c *Client) EnsureSetup(ctx context.Context) error {
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	live, err := c.Dynamic.Resource(crdGVR).Get(ctx, "components.tend.dev", metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		if IsUnreachable(err) {
			return Unreachable(c.Config.Host, err)
		}
		return fmt.Errorf("read Component CRD: %w", err)
	}
	if err != nil || live.GetAnnotations()["tend.dev/crd-hash"] != crdHash {
		crd := CRD()
		data, _ := json.Marshal(crd.Object)
		force := true
		if _, err := c.Dynamic.Resource(crdGVR).Patch(ctx, crd.GetName(), types.ApplyPatchType, data,
			metav1.PatchOptions{FieldManager: FieldManager, Force: &force}); err != nil {
			return fmt.Errorf("install Component CRD: %w", err)
		}
		for {
			u, err := c.Dynamic.Resource(crdGVR).Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err == nil && stage0Ready(u) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		c.Mapper.Reset()
	}
	_, err = c.Typed.CoreV1().Namespaces().Get(ctx, Namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
			"metadata": map[string]any{"name": Namespace, "labels": map[string]any{"app.kubernetes.io/managed-by": "tend"}}}}
		_, err = c.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", Namespace, err)
	}
	return nil
}

// ListComponents reads the Component objects of a cluster ("" for all).
func (c *Client) ListComponents(ctx context.Context, cluster string) ([]Component, error) {
	opts := metav1.ListOptions{}
	if cluster != "" {
		opts.LabelSelector = LabelCluster + "=" + cluster
	}
	l, err := c.Dynamic.Resource(ComponentGVR).Namespace(Namespace).List(ctx, opts)
	if err != nil {
		if IsUnreachable(err) {
			return nil, Unreachable(c.Config.Host, err)
		}
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	out := make([]Component, 0, len(l.Items))
	for i := range l.Items {
		comp, err := fromUnstructured(&l.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, comp)
	}
	return out, nil
}

// GetComponent reads one Component; a missing one is zero with ok false.
func (c *Client) GetComponent(ctx context.Context, name string) (Component, bool, error) {
	u, err := c.Dynamic.Resource(ComponentGVR).Namespace(Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Component{Name: name}, false, nil
	}
	if err != nil {
		return Component{}, false, err
	}
	comp, err := fromUnstructured(u)
	return comp, true, err
}

func fromUnstructured(u *unstructured.Unstructured) (Component, error) {
	var comp struct {
		Spec   ComponentSpec   `json:"spec"`
		Status ComponentStatus `json:"status"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &comp); err != nil {
		return Component{}, fmt.Errorf("read Component %s: %w", u.GetName(), err)
	}
	return Component{Name: u.GetName(), Spec: comp.Spec, Status: comp.Status, Created: u.GetCreationTimestamp(), UID: u.GetUID()}, nil
}

// WriteComponent stores spec and status, only the parts that changed: an
// idle reconcile leaves both as they are and writes nothing.
func (c *Client) WriteComponent(ctx context.Context, name string, old Component, existed bool, spec ComponentSpec, st ComponentStatus) error {
	res := c.Dynamic.Resource(ComponentGVR).Namespace(Namespace)
	if !existed || !reflect.DeepEqual(old.Spec, spec) {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "tend.dev/v1alpha1", "kind": "Component",
			"metadata": map[string]any{"name": name, "namespace": Namespace,
				"labels": map[string]any{LabelCluster: spec.Cluster, "app.kubernetes.io/managed-by": "tend"}},
			"spec": toMap(spec),
		}}
		data, _ := json.Marshal(u.Object)
		force := true
		if _, err := res.Patch(ctx, name, types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: FieldManager, Force: &force}); err != nil {
			return fmt.Errorf("write Component %s: %w", name, err)
		}
	}
	if existed && statusEqual(old.Status, st) {
		return nil
	}
	st.InventoryCount = len(st.Inventory)
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "tend.dev/v1alpha1", "kind": "Component",
		"metadata": map[string]any{"name": name, "namespace": Namespace},
		"status":   toMap(st),
	}}
	data, _ := json.Marshal(u.Object)
	force := true
	if _, err := res.Patch(ctx, name, types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: FieldManager, Force: &force}, "status"); err != nil {
		return fmt.Errorf("write status of Component %s: %w", name, err)
	}
	return nil
}

func statusEqual(a, b ComponentStatus) bool {
	b.InventoryCount = len(b.Inventory)
	norm := func(cs []metav1.Condition) []metav1.Condition {
		out := make([]metav1.Condition, len(cs))
		for i, c := range cs {
			c.LastTransitionTime = metav1.Time{}
			out[i] = c
		}
		return out
	}
	a.Conditions, b.Conditions = norm(a.Conditions), norm(b.Conditions)
	if len(a.Inventory) == 0 {
		a.Inventory = nil
	}
	if len(b.Inventory) == 0 {
		b.Inventory = nil
	}
	return reflect.DeepEqual(a, b)
}

func toMap(v any) map[string]any {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}
