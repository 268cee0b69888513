package cli

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/reconcile"
)

type applyResult struct {
	Revision   string             `json:"revision"`
	Components []reconcile.Result `json:"components"`
	Ready      bool               `json:"ready"`
}

func newApply(g *globals) *cobra.Command {
	var workers int
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Apply the cluster once, with the same engine as the agent; exit 0 when every component is Ready, 2 otherwise",
		Example: `  tend apply --repo ./ops --cluster dev
  tend apply --repo https://git.example.com/ops.git --revision v1.4.0 --cluster prod -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			src, c, err := g.sourceAndCluster(ctx, true)
			if err != nil {
				return err
			}
			ids, err := g.identities(ctx, c)
			if err != nil {
				return err
			}
			r := reconcile.New(reconcile.Options{Source: src, Cluster: g.cluster, Kube: c, Identities: ids, Log: g.logger(slog.LevelWarn), Workers: workers, Events: true})
			var mu sync.Mutex
			if !g.json() {
				r.OnResult = func(res reconcile.Result) {
					mu.Lock()
					defer mu.Unlock()
					printResult(g, res)
				}
			}
			results, rev, err := r.Once(ctx)
			if err != nil {
				return err
			}
			res := applyResult{Revision: rev.String(), Components: results, Ready: true}
			failed := []string{}
			for _, x := range results {
				if !x.Ready {
					res.Ready = false
					failed = append(failed, x.Component)
				}
			}
			if g.json() {
				if err := g.printJSON(res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "applied %s: %d components, %d Ready\n", rev.Short(), len(results), len(results)-len(failed))
			}
			if !res.Ready {
				return silentErr{Err: fmt.Errorf("not Ready: %s", strings.Join(failed, ", "))}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&workers, "workers", 8, "components applied at once")
	return cmd
}

func printResult(g *globals, res reconcile.Result) {
	mark := "✓"
	if !res.Ready {
		mark = "✗"
	}
	summary := res.Reason
	if cs := res.Changes; cs != nil {
		summary = fmt.Sprintf("%s: %d created, %d configured, %d unchanged, %d deleted", res.Reason,
			cs.Count(kube.Created), cs.Count(kube.Configured), cs.Count(kube.Unchanged), cs.Count(kube.Deleted))
		if d := len(cs.Drifted()); d > 0 {
			summary += fmt.Sprintf(", %d drift corrected", d)
		}
	}
	fmt.Fprintf(g.stdout, "%s %-24s %s (%s)\n", mark, res.Component, summary, res.Duration.Round(1e6))
	if !res.Ready && res.Message != "" {
		for _, line := range strings.Split(res.Message, "\n") {
			fmt.Fprintf(g.stdout, "    %s\n", line)
		}
		if res.Hint != "" {
			fmt.Fprintf(g.stdout, "    hint: %s\n", res.Hint)
		}
	}
}
