package nodecli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/backup/restic"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/node"
	"tend.dev/tend/internal/notify"
	"tend.dev/tend/internal/term"
)

// BackupListing is one Backup of a machine: its snapshots in the
// repository and its runs on the machine. `tend backup list` reads it.
type BackupListing struct {
	Backup    string            `json:"backup"`
	Machine   string            `json:"machine"`
	Snapshots []restic.Snapshot `json:"snapshots"`
	Record    *backup.Record    `json:"record,omitempty"`
	Next      time.Time         `json:"next,omitzero"`
	Error     string            `json:"error,omitempty"`
	Hint      string            `json:"hint,omitempty"`
}

// RestoreAnswer is what `tend node backup restore -o json` prints: the
// result, or the conflict that needs --yes.
type RestoreAnswer struct {
	Result   *backup.RestoreResult `json:"result,omitempty"`
	Conflict *backup.ConflictError `json:"conflict,omitempty"`
}

func newBackup(g *Env, agent func() (*node.Agent, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "This machine's Backups: list snapshots, run one now, drill a restore, restore",
	}
	// prepare fetches the repository and finds the Backup of this machine.
	prepare := func(ctx context.Context, name string) (*node.Agent, *node.Prepared, *model.Backup, error) {
		a, err := agent()
		if err != nil {
			return nil, nil, nil, err
		}
		p, err := a.Prepare(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		if name == "" {
			return a, p, nil, nil
		}
		for _, b := range p.Backups {
			if b.Metadata.Name == name {
				return a, p, b, nil
			}
		}
		return nil, nil, nil, model.WithHint(fmt.Errorf("no Backup %q runs on machine %s", name, a.Config.Machine),
			"a Backup runs on a machine when its spec.machines.pool is the machine's pool and its machines list it (or is empty)")
	}
	list := &cobra.Command{
		Use:   "list [NAME]",
		Short: "Snapshots of this machine's Backups, with the last runs",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			a, p, one, err := prepare(cmd.Context(), name)
			if err != nil {
				return err
			}
			bs := p.Backups
			if one != nil {
				bs = []*model.Backup{one}
			}
			st, _ := backup.ReadState(backup.StateFile(a.Config.StateDir))
			if st == nil {
				st = &backup.State{}
			}
			r := a.BackupRunner(p)
			var out []BackupListing
			failed := false
			for _, b := range bs {
				l := BackupListing{Backup: b.Metadata.Name, Machine: a.Config.Machine, Record: st.Backups[b.Metadata.Name],
					Next: backup.NextRun([]*model.Backup{b}, st, time.Now(), a.Config.Machine)}
				snaps, err := r.Snapshots(cmd.Context(), b, false)
				if err != nil {
					l.Error, l.Hint, failed = err.Error(), model.HintOf(err), true
				}
				l.Snapshots = snaps
				out = append(out, l)
			}
			if g.json() {
				if err := g.printJSON(out); err != nil {
					return err
				}
			} else {
				PrintListings(g.Stdout, out)
			}
			if failed {
				return term.NotClean{Msg: "a repository could not be read"}
			}
			return nil
		},
	}
	var verify bool
	run := &cobra.Command{
		Use:   "run NAME",
		Short: "Run a Backup (or with --verify, its restore drill) now; exit 1 when it fails",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, p, b, err := prepare(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			kind := backup.KindBackup
			if verify {
				kind = backup.KindVerify
			}
			run, err := a.RunBackup(cmd.Context(), p, backup.Task{Backup: b, Kind: kind, Trigger: backup.Manual})
			if err != nil {
				return err
			}
			if g.json() {
				if err := g.printJSON(run); err != nil {
					return err
				}
			} else {
				PrintRun(g.Stdout, a.Config.Machine, run)
			}
			if run.Result != backup.Succeeded {
				return term.NotClean{Msg: run.Error}
			}
			return nil
		},
	}
	run.Flags().BoolVar(&verify, "verify", false, "run the restore drill instead of a backup")
	var ro backup.RestoreOptions
	restore := &cobra.Command{
		Use:   "restore NAME",
		Short: "Restore a snapshot to its original place or --to DIR; refuses to overwrite local changes without --yes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, p, b, err := prepare(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			unlock, err := a.LockBackups()
			if err != nil {
				return err
			}
			defer unlock()
			res, err := a.BackupRunner(p).Restore(cmd.Context(), b, ro)
			var ce *backup.ConflictError
			if errors.As(err, &ce) && g.json() {
				g.printJSON(RestoreAnswer{Conflict: ce})
				return term.NotClean{Msg: ce.Error()}
			}
			if err != nil {
				return err
			}
			g.logger(slog.LevelInfo).Info("restored", "backup", b.Metadata.Name, "snapshot", res.Snapshot, "where", res.Where, "files", res.Files)
			if g.json() {
				return g.printJSON(RestoreAnswer{Result: res})
			}
			PrintRestore(g.Stdout, res)
			return nil
		},
	}
	restore.Flags().StringVar(&ro.Snapshot, "snapshot", "latest", "snapshot ID, or latest")
	restore.Flags().StringVar(&ro.To, "to", "", "restore under this directory instead of the original place")
	restore.Flags().BoolVar(&ro.Yes, "yes", false, "overwrite local changes (and run a dump's restore command)")
	cmd.AddCommand(list, run, restore)
	return cmd
}

// Notifier posts failed runs to the Backup's notify targets.
func Notifier(ctx context.Context, machine string) func(*model.Backup, backup.Run) {
	notifiers := map[string]*notify.Notifier{}
	return func(b *model.Backup, run backup.Run) {
		if run.Result == backup.Succeeded || len(b.Spec.Notify) == 0 {
			return
		}
		key := fmt.Sprint(b.Spec.Notify)
		n := notifiers[key]
		if n == nil {
			n = &notify.Notifier{}
			for _, t := range b.Spec.Notify {
				n.Targets = append(n.Targets, notify.Target{URL: t.URL, Slack: t.Slack})
			}
			n.Start(ctx)
			notifiers[key] = n
		}
		n.Notify(notify.Event{Cluster: machine, Component: "backup/" + b.Metadata.Name, Outcome: string(run.Kind) + "-failed",
			Message: fmt.Sprintf("%s %s on %s failed: %s", run.Kind, b.Metadata.Name, machine, run.Error), Time: run.Start})
	}
}

// PrintListings prints snapshots per backup and machine.
func PrintListings(w io.Writer, ls []BackupListing) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKUP\tTARGET\tSNAPSHOT\tTIME\tPATHS")
	for _, l := range ls {
		if l.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\terror: %s\n", l.Backup, l.Machine, term.OneLine(l.Error, 80))
			continue
		}
		if len(l.Snapshots) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\tno snapshot yet\n", l.Backup, l.Machine)
		}
		for _, s := range l.Snapshots {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Backup, l.Machine, s.ShortID, s.Time.Local().Format("2006-01-02 15:04:05"), term.OneLine(fmt.Sprint(s.Paths), 60))
		}
	}
	tw.Flush()
	for _, l := range ls {
		if r := l.Record; r != nil && r.Last != nil {
			fmt.Fprintf(w, "%s on %s: last %s %s %s ago", l.Backup, l.Machine, r.Last.Kind, r.Last.Result, time.Since(r.Last.Start).Round(time.Second))
			if r.Last.Error != "" {
				fmt.Fprintf(w, ": %s", term.OneLine(r.Last.Error, 100))
			}
			if !l.Next.IsZero() {
				fmt.Fprintf(w, "; next %s", l.Next.Local().Format("2006-01-02 15:04"))
			}
			fmt.Fprintln(w)
		}
	}
}

// PrintRun prints one run.
func PrintRun(w io.Writer, target string, r backup.Run) {
	if r.Result != backup.Succeeded {
		fmt.Fprintf(w, "✗ %s %s on %s failed after %s: %s\n", r.Kind, r.Backup, target, r.Duration, r.Error)
		if r.Hint != "" {
			fmt.Fprintf(w, "  hint: %s\n", r.Hint)
		}
		return
	}
	switch r.Kind {
	case backup.KindVerify:
		fmt.Fprintf(w, "✓ verified %s on %s: snapshot %.8s restored and checked, %d files, %s (%s)\n", r.Backup, target, r.Snapshot, r.Files, bytesText(r.Bytes), r.Duration)
	default:
		fmt.Fprintf(w, "✓ backup %s on %s: snapshot %.8s, %s processed, %s added, %d pruned (%s)\n", r.Backup, target, r.Snapshot, bytesText(r.Bytes), bytesText(r.Added), r.Pruned, r.Duration)
	}
	if r.Note != "" {
		fmt.Fprintf(w, "  note: %s\n", r.Note)
	}
}

// PrintRestore prints a restore's result.
func PrintRestore(w io.Writer, r *backup.RestoreResult) {
	fmt.Fprintf(w, "✓ restored %s on %s from snapshot %.8s (%s) to %s", r.Backup, r.Target, r.Snapshot, r.Time.Local().Format("2006-01-02 15:04:05"), r.Where)
	if r.Files > 0 {
		fmt.Fprintf(w, ", %d files", r.Files)
	}
	if r.Summary != "" {
		fmt.Fprintf(w, ": %s", r.Summary)
	}
	fmt.Fprintln(w)
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
