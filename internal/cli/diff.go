package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/source"
)

type diffResult struct {
	Revision string            `json:"revision"`
	Changed  bool              `json:"changed"`
	Objects  []kube.ObjectDiff `json:"objects"`
}

func newDiff(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "diff",
		Short: "Show what apply would change, from a server-side dry run; exit 0 no changes, 1 changes, 2 error",
		Example: `  tend diff --repo ./ops --cluster dev
  tend diff --repo https://git.example.com/ops.git --revision my-branch --cluster prod || echo "changes"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := g.requireCluster(); err != nil {
				return err
			}
			l, err := g.load(ctx)
			if err != nil {
				return err
			}
			c, err := g.kubeClient()
			if err != nil {
				return err
			}
			if err := c.Ping(ctx); err != nil {
				return err
			}
			ids, err := g.identities(ctx, c)
			if err != nil {
				return err
			}
			cl, objs, err := l.renderCluster(g.cluster, ids)
			if err != nil {
				return err
			}
			a := &kube.Applier{C: c, Live: kube.Direct{C: c}}
			res := diffResult{Revision: l.rev.String(), Objects: []kube.ObjectDiff{}}
			pending := map[string]bool{}
			for _, o := range objs {
				for k := range kube.Pending(o) {
					pending[k] = true
				}
			}
			var errs []error
			for _, name := range model.Order(cl.Spec.Components) {
				comp := findComponent(cl, name)
				status, _, err := c.GetComponent(ctx, name)
				if err != nil && !isNoCRD(err) {
					return err
				}
				diffs, err := a.Diff(ctx, kube.Request{Cluster: g.cluster, Component: name, Namespace: comp.Namespace,
					Force: comp.Force, Prune: comp.PruneEnabled(), Objects: objs[name], Inventory: status.Status.Inventory, Pending: pending})
				if err != nil {
					errs = append(errs, fmt.Errorf("component %s: %w", name, err))
				}
				res.Objects = append(res.Objects, diffs...)
			}
			res.Changed = len(res.Objects) > 0
			if g.json() {
				if err := g.printJSON(res); err != nil {
					return err
				}
			} else {
				for _, d := range res.Objects {
					drift := ""
					if d.Drift {
						drift = " (drift)"
					}
					fmt.Fprintf(g.stdout, "%s %s%s\n%s\n", d.Action, d.Object, drift, d.Diff)
				}
				if !res.Changed && len(errs) == 0 {
					fmt.Fprintln(g.stdout, "no changes")
				}
			}
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			if res.Changed {
				return notClean{Msg: "changes"}
			}
			return nil
		},
	}
}

func findComponent(cl *model.Cluster, name string) model.Component {
	for _, c := range cl.Spec.Components {
		if c.Name == name {
			return c
		}
	}
	return model.Component{Name: name}
}

func isNoCRD(err error) bool { return err != nil && kube.IgnoreNotFound(err) == nil }

// sourceAndCluster opens the source and the cluster client for commands
// that act on a Cluster; ping checks the API server answers first.
func (g *globals) sourceAndCluster(ctx context.Context, ping bool) (source.Source, *kube.Client, error) {
	if err := g.requireCluster(); err != nil {
		return nil, nil, err
	}
	src, err := g.openSource()
	if err != nil {
		return nil, nil, err
	}
	c, err := g.kubeClient()
	if err != nil {
		return nil, nil, err
	}
	if ping {
		if err := c.Ping(ctx); err != nil {
			return nil, nil, err
		}
	}
	return src, c, nil
}

func (g *globals) kubeClient() (*kube.Client, error) {
	cfg, err := kube.RESTConfig(g.kubeconfig)
	if err != nil {
		return nil, err
	}
	return kube.NewClient(cfg)
}
