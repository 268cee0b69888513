package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

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
