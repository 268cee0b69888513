package cli

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

type statusRow struct {
	Component string `json:"component"`
	Cluster   string `json:"cluster"`
	Ready     string `json:"ready"`
	Reason    string `json:"reason"`
	Message   string `json:"message"`
	Revision  string `json:"revision"`
	Objects   int    `json:"objects"`
	LastError string `json:"lastError,omitempty"`
}

func newStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every component: applied revision, Ready with its reason, inventory count; exit 1 when any is not Ready",
		Example: `  tend status --cluster dev
  tend status -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.kubeClient()
			if err != nil {
				return err
			}
			comps, err := c.ListComponents(cmd.Context(), g.cluster)
			if err != nil {
				return err
			}
			sort.Slice(comps, func(i, j int) bool { return comps[i].Name < comps[j].Name })
			rows := make([]statusRow, 0, len(comps))
			allReady := true
			for _, comp := range comps {
				r := statusRow{Component: comp.Name, Cluster: comp.Spec.Cluster, Ready: "Unknown", Revision: comp.Status.LastAppliedRevision,
					Objects: comp.Status.InventoryCount, LastError: comp.Status.LastError}
				if cond := comp.Status.Ready(); cond != nil {
					r.Ready, r.Reason, r.Message = string(cond.Status), cond.Reason, cond.Message
				}
				if r.Ready != "True" {
					allReady = false
				}
				rows = append(rows, r)
			}
			if g.json() {
				if err := g.printJSON(rows); err != nil {
					return err
				}
			} else {
				if len(rows) == 0 {
					fmt.Fprintln(g.stdout, "no components: run `tend apply` or `tend run` first")
				} else {
					tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "COMPONENT\tCLUSTER\tREADY\tREASON\tREVISION\tOBJECTS\tMESSAGE")
					for _, r := range rows {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Component, r.Cluster, r.Ready, r.Reason, shortRev(r.Revision), r.Objects, oneLine(r.Message, 80))
					}
					tw.Flush()
					// The table cuts messages short; a failure is worth reading whole.
					for _, r := range rows {
						if r.Ready != "True" && len(r.Message) > 80 {
							fmt.Fprintf(g.stdout, "\n%s: %s\n", r.Component, r.Message)
						}
					}
				}
			}
			if !allReady {
				return notClean{Msg: "not ready"}
			}
			return nil
		},
	}
}

func shortRev(s string) string {
	if i := strings.LastIndex(s, ":"); i >= 0 && len(s)-i > 13 {
		return s[:i+13]
	}
	return s
}
