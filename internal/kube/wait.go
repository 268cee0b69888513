package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	klabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Health is the kstatus result for one object.
type Health struct {
	Object  string        `json:"object"`
	Status  status.Status `json:"status"`
	Message string        `json:"message,omitempty"`
}

// wait polls the live objects of the component until kstatus says every one
// is Current, one Failed, or the timeout passes. In the agent the reads hit
// the watch cache, so polling costs no API requests.
func (a *Applier) wait(ctx context.Context, req Request, inv Inventory) error {
	var pending []Health
	for {
		var err error
		pending, err = a.Health(ctx, inv)
		if err != nil {
			return err
		}
		failed := ""
		for _, h := range pending {
			if h.Status == status.FailedStatus {
				failed = h.Object + ": " + h.Message
			}
		}
		if failed != "" {
			return &ObjectError{Op: "wait for", Object: req.Component, Err: fmt.Errorf("failed: %s", failed),
				Hint: "see the object's events with kubectl describe"}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			// The deadline has passed; a short one of our own reads why pods are stuck.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			a.podReasons(pctx, inv, pending)
			cancel()
			return &ObjectError{Op: "wait for", Object: "component " + req.Component, Err: fmt.Errorf("timed out with %s", describeHealth(pending)),
				Hint: "raise the component's timeout, or check why these objects do not become ready (kubectl describe)"}
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Health returns the objects of inv that are not Current yet.
func (a *Applier) Health(ctx context.Context, inv Inventory) ([]Health, error) {
	var out []Health
	for _, e := range inv {
		id, err := e.ObjID()
		if err != nil {
			continue
		}
		m, err := a.C.Mapping(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: e.Version, Kind: id.GroupKind.Kind})
		if err != nil {
			return nil, err
		}
		u, err := a.Live.Get(ctx, m, id.Namespace, id.Name)
		if err != nil {
			if IgnoreNotFound(err) == nil {
				out = append(out, Health{Object: Describe(id), Status: status.NotFoundStatus, Message: "not found"})
				continue
			}
			return nil, err
		}
		res, err := status.Compute(u)
		if err != nil {
			out = append(out, Health{Object: Describe(id), Status: status.UnknownStatus, Message: err.Error()})
			continue
		}
		if res.Status != status.CurrentStatus {
			out = append(out, Health{Object: Describe(id), Status: res.Status, Message: res.Message})
		}
	}
	return out, nil
}

func describeHealth(hs []Health) string {
	sort.Slice(hs, func(i, j int) bool { return hs[i].Object < hs[j].Object })
	var parts []string
	for i, h := range hs {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(hs)-5))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %s (%s)", h.Object, h.Status, h.Message))
	}
	return strings.Join(parts, "; ")
}

// podReasons adds to the message of each pending workload why its pods are
// not ready (ErrImagePull, CrashLoopBackOff, …): kstatus only sees the
// workload's counters, and "1 of 3 updated" alone sends users hunting.
// It runs once, when a wait has already failed, so its reads cost nothing
// in the steady state.
func (a *Applier) podReasons(ctx context.Context, inv Inventory, pending []Health) {
	byName := map[string]Entry{}
	for _, e := range inv {
		if id, err := e.ObjID(); err == nil {
			byName[Describe(id)] = e
		}
	}
	for i, h := range pending {
		e, ok := byName[h.Object]
		if !ok {
			continue
		}
		id, _ := e.ObjID()
		if id.GroupKind.Group != "apps" {
			continue
		}
		m, err := a.C.Mapping(schema.GroupVersionKind{Group: "apps", Version: e.Version, Kind: id.GroupKind.Kind})
		if err != nil {
			continue
		}
		u, err := a.Live.Get(ctx, m, id.Namespace, id.Name)
		if err != nil {
			continue
		}
		labels, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
		if len(labels) == 0 {
			continue
		}
		pods, err := a.C.Typed.CoreV1().Pods(id.Namespace).List(ctx, metav1.ListOptions{LabelSelector: klabels.SelectorFromSet(labels).String()})
		if err != nil {
			continue
		}
		if r := PodReasons(pods.Items); r != "" {
			pending[i].Message += "; " + r
		}
	}
}

// PodReasons summarises why pods are not ready, from their container
// states: "pod web-7d9 agent: ErrImagePull (failed to pull …)". Pure.
func PodReasons(pods []corev1.Pod) string {
	var parts []string
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			reason, msg := "", ""
			switch {
			case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "ContainerCreating" && cs.State.Waiting.Reason != "PodInitializing":
				reason, msg = cs.State.Waiting.Reason, cs.State.Waiting.Message
			case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
				reason, msg = cs.State.Terminated.Reason, fmt.Sprintf("exit code %d", cs.State.Terminated.ExitCode)
			default:
				continue
			}
			s := fmt.Sprintf("pod %s %s: %s", p.Name, cs.Name, reason)
			if msg != "" {
				s += " (" + msg + ")"
			}
			parts = append(parts, s)
			break
		}
		if len(parts) == 3 {
			break
		}
	}
	return strings.Join(parts, "; ")
}
