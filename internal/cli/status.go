package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/reconcile"
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
			if !g.json() && g.cluster != "" && !printBackups(cmd.Context(), g, c) {
				allReady = false
			}
			if !allReady {
				return notClean{Msg: "not ready"}
			}
			return nil
		},
	}
}

// printBackups prints the cluster's Backups from the leader's state, and
// reports false when a last backup or drill failed.
func printBackups(ctx context.Context, g *globals, c *kube.Client) bool {
	cm, err := c.Typed.CoreV1().ConfigMaps(kube.Namespace).Get(ctx, reconcile.BackupStateName(g.cluster), metav1.GetOptions{})
	if err != nil {
		return true
	}
	var st backup.State
	if json.Unmarshal([]byte(cm.Data["state.json"]), &st) != nil || len(st.Backups) == 0 {
		return true
	}
	ok := true
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nBACKUP\tLAST\tRESULT\tSNAPSHOT\tLAST SUCCESS\tLAST DRILL\tMESSAGE")
	for _, name := range st.Names() {
		r := st.Backups[name]
		last, result, snap, msg := "never", "-", "-", ""
		if r.Last != nil {
			last, result, snap, msg = ago(r.Last.Start), string(r.Last.Result), orDash(shortID(r.Last.Snapshot)), r.Last.Error
			ok = ok && r.Last.Result == backup.Succeeded
		}
		success := "never"
		if r.LastSuccess != nil {
			success = ago(r.LastSuccess.Start)
		}
		drill := "-"
		if r.LastVerify != nil {
			drill = string(r.LastVerify.Result) + " " + ago(r.LastVerify.Start)
			ok = ok && r.LastVerify.Result == backup.Succeeded
			if msg == "" {
				msg = r.LastVerify.Error
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, last, result, snap, success, drill, oneLine(msg, 80))
	}
	tw.Flush()
	return ok
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func shortRev(s string) string {
	if i := strings.LastIndex(s, ":"); i >= 0 && len(s)-i > 13 {
		return s[:i+13]
	}
	return s
}
