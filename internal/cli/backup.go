package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/backup/objects"
	"tend.dev/tend/internal/fleet"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/nodecli"
	"tend.dev/tend/internal/secret"
)

// backupFlags are the flags of `tend backup` commands.
type backupFlags struct {
	poolFlags
	machine string
}

// backupTarget is a Backup with where it runs.
type backupTarget struct {
	b    *model.Backup
	pool *model.MachinePool
	root string
	repo *model.Repo
}

// loadBackup reads the repository (--repo, a directory or a git URL) and
// finds Backup name with its pool.
func (g *globals) loadBackup(ctx context.Context, name string) (*backupTarget, error) {
	l, err := g.load(ctx)
	if err != nil {
		return nil, err
	}
	b, err := l.repo.Backup(name)
	if err != nil {
		if l.repo.Problems.Err() != nil {
			return nil, errors.Join(err, l.repo.Problems)
		}
		return nil, err
	}
	t := &backupTarget{b: b, root: l.dir, repo: l.repo}
	if m := b.Spec.Machines; m != nil {
		if t.pool, err = l.repo.MachinePool(m.Pool); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// machines returns the target machines, or the one --machine names.
func (t *backupTarget) machines(only string) ([]*model.Machine, error) {
	var out []*model.Machine
	for _, name := range t.b.Targets(t.pool) {
		if only != "" && name != only {
			continue
		}
		m, err := t.pool.Machine(name)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, model.WithHint(fmt.Errorf("backup %s does not run on machine %q", t.b.Metadata.Name, only),
			"it runs on: %s", strings.Join(t.b.Targets(t.pool), ", "))
	}
	return out, nil
}

// clusterRunner runs a cluster Backup from this process, against
// --kubeconfig, with the age identities tend finds here.
func (g *globals) clusterRunner(ctx context.Context, t *backupTarget) (*backup.Runner, error) {
	c, err := g.kubeClient()
	if err != nil {
		return nil, err
	}
	ids, err := g.identities(ctx, c)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tend-backup-")
	if err != nil {
		return nil, err
	}
	return &backup.Runner{Target: t.b.Spec.Cluster.Name, Dir: dir, Root: t.root,
		Decrypt: func(file string, data []byte) ([]byte, error) { return secret.Decrypt(file, data, ids) },
		Objects: &ClusterObjects{Client: c, Cluster: t.b.Spec.Cluster.Name}}, nil
}

// ClusterObjects is backup.Objects over a cluster: export through
// discovery, restore through the SSA engine with tend's field manager, so
// restored objects are owned as their components own them.
type ClusterObjects struct {
	Client  *kube.Client
	Cluster string
}

var _ backup.Objects = (*ClusterObjects)(nil)

// Export writes the objects b selects under dir.
func (o *ClusterObjects) Export(ctx context.Context, b *model.ClusterBackup, dir string) (int64, error) {
	res, err := objects.Export(ctx, o.Client, b.Namespaces, b.Selector, dir)
	if err != nil {
		return 0, err
	}
	return int64(res.Objects), nil
}

// Restore applies the manifests under dir, into namespace when set.
func (o *ClusterObjects) Restore(ctx context.Context, dir, namespace string) (string, error) {
	res, err := objects.Restore(ctx, &kube.Applier{C: o.Client, Live: kube.Direct{C: o.Client}}, dir,
		objects.RestoreOptions{Namespace: namespace, Wait: true, Timeout: 5 * time.Minute})
	if err != nil {
		return "", err
	}
	counts := map[kube.Action]int{}
	for _, c := range res.Changes {
		counts[c.Action]++
	}
	return fmt.Sprintf("%d objects: %d created, %d configured, %d unchanged", len(res.Changes),
		counts[kube.Created], counts[kube.Configured], counts[kube.Unchanged]), nil
}

func newBackupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Backups declared in git: list snapshots, run one now, restore",
		Long: `A Backup (kind: Backup) runs on the targets that hold the data: each machine's
agent backs up its own paths and dumps, a cluster's leader agent its objects.
These commands reach them: machines over SSH (pinned host keys), clusters
through --kubeconfig.`,
	}
	var f backupFlags
	addFlags := func(c *cobra.Command) {
		f.poolFlags.add(c)
		c.Flags().Lookup("pool").Hidden = true
		c.Flags().StringVar(&f.machine, "machine", "", "only this machine of the pool")
	}
	list := &cobra.Command{
		Use:   "list NAME",
		Short: "Snapshots of a Backup on every target, with the last runs; exit 1 when a target's last run failed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			t, err := g.loadBackup(ctx, args[0])
			if err != nil {
				return err
			}
			var ls []nodecli.BackupListing
			if t.b.Spec.Cluster != nil {
				r, err := g.clusterRunner(ctx, t)
				if err != nil {
					return err
				}
				defer os.RemoveAll(r.Dir)
				l := nodecli.BackupListing{Backup: t.b.Metadata.Name, Machine: r.Target}
				l.Snapshots, err = r.Snapshots(ctx, t.b, false)
				if err != nil {
					l.Error, l.Hint = err.Error(), model.HintOf(err)
				}
				ls = append(ls, l)
			} else {
				ls, err = g.remoteListings(ctx, &f, t)
				if err != nil {
					return err
				}
			}
			if g.json() {
				if err := g.printJSON(ls); err != nil {
					return err
				}
			} else {
				nodecli.PrintListings(g.stdout, ls)
				for _, l := range ls {
					if l.Error != "" && l.Hint != "" {
						fmt.Fprintf(g.stderr, "%s: %s\n  hint: %s\n", l.Machine, l.Error, l.Hint)
					}
				}
			}
			for _, l := range ls {
				if l.Error != "" || (l.Record != nil && l.Record.Last != nil && l.Record.Last.Result != backup.Succeeded) {
					return notClean{Msg: "not every target's backup is healthy"}
				}
			}
			return nil
		},
	}
	addFlags(list)
	var verify bool
	run := &cobra.Command{
		Use:   "run NAME",
		Short: "Run a Backup now on its targets (or, with --verify, its restore drill); exit 1 when one fails",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			t, err := g.loadBackup(ctx, args[0])
			if err != nil {
				return err
			}
			var runs []backup.Run
			if t.b.Spec.Cluster != nil {
				r, err := g.clusterRunner(ctx, t)
				if err != nil {
					return err
				}
				defer os.RemoveAll(r.Dir)
				var run backup.Run
				if verify {
					run = r.Verify(ctx, t.b)
				} else {
					run = r.Backup(ctx, t.b, backup.Manual)
				}
				if !g.json() {
					nodecli.PrintRun(g.stdout, r.Target, run)
				}
				runs = append(runs, run)
			} else {
				ms, err := t.machines(f.machine)
				if err != nil {
					return err
				}
				d, err := f.dialer()
				if err != nil {
					return err
				}
				command := fleet.BinPath + " node backup run " + t.b.Metadata.Name + " -o json"
				if verify {
					command += " --verify"
				}
				for _, m := range ms {
					if !g.json() {
						fmt.Fprintf(g.stderr, "… %s on %s\n", map[bool]string{false: "backing up", true: "verifying"}[verify], m.Name)
					}
					out, err := fleet.On(ctx, d, m, command)
					var run backup.Run
					if jerr := json.Unmarshal(out, &run); jerr != nil || run.Backup == "" {
						if err == nil {
							err = jerr
						}
						run = backup.Run{Backup: t.b.Metadata.Name, Result: backup.Failed, Error: err.Error(), Hint: model.HintOf(err)}
					}
					if !g.json() {
						nodecli.PrintRun(g.stdout, m.Name, run)
					}
					runs = append(runs, run)
				}
			}
			if g.json() {
				if err := g.printJSON(runs); err != nil {
					return err
				}
			}
			for _, r := range runs {
				if r.Result != backup.Succeeded {
					return notClean{Msg: "a run failed"}
				}
			}
			return nil
		},
	}
	addFlags(run)
	run.Flags().BoolVar(&verify, "verify", false, "run the restore drill instead of a backup")
	var ro backup.RestoreOptions
	restore := &cobra.Command{
		Use:   "restore NAME",
		Short: "Restore a snapshot: files to their place or --to DIR, a dump through its restore command, objects into their namespaces or --namespace",
		Long: `Restores the snapshot --snapshot (an ID, or latest) of a Backup on each of its
targets (--machine picks one). It asks before it overwrites local changes
or runs a dump's restore command; --yes answers yes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			t, err := g.loadBackup(ctx, args[0])
			if err != nil {
				return err
			}
			if t.b.Spec.Cluster != nil {
				if ro.To != "" {
					return model.WithHint(errors.New("--to is for machine backups"), "restore objects into another namespace with --namespace NS")
				}
				r, err := g.clusterRunner(ctx, t)
				if err != nil {
					return err
				}
				defer os.RemoveAll(r.Dir)
				res, err := r.Restore(ctx, t.b, ro)
				if err != nil {
					return err
				}
				if g.json() {
					return g.printJSON(res)
				}
				nodecli.PrintRestore(g.stdout, res)
				return nil
			}
			if ro.Namespace != "" {
				return model.WithHint(errors.New("--namespace is for cluster backups"), "restore files elsewhere with --to DIR")
			}
			ms, err := t.machines(f.machine)
			if err != nil {
				return err
			}
			d, err := f.dialer()
			if err != nil {
				return err
			}
			var results []*backup.RestoreResult
			for _, m := range ms {
				res, err := g.remoteRestore(ctx, cmd, d, m, t.b, ro)
				if err != nil {
					return fmt.Errorf("machine %s: %w", m.Name, err)
				}
				results = append(results, res)
				if !g.json() {
					nodecli.PrintRestore(g.stdout, res)
				}
			}
			if g.json() {
				return g.printJSON(results)
			}
			return nil
		},
	}
	addFlags(restore)
	restore.Flags().StringVar(&ro.Snapshot, "snapshot", "latest", "snapshot ID, or latest")
	restore.Flags().StringVar(&ro.To, "to", "", "machines: restore under this directory instead of the original place")
	restore.Flags().StringVar(&ro.Namespace, "namespace", "", "clusters: restore the objects into this namespace")
	restore.Flags().BoolVar(&ro.Yes, "yes", false, "overwrite without asking")
	cmd.AddCommand(list, run, restore)
	return cmd
}

// remoteListings asks every target machine for its snapshots and runs.
func (g *globals) remoteListings(ctx context.Context, f *backupFlags, t *backupTarget) ([]nodecli.BackupListing, error) {
	ms, err := t.machines(f.machine)
	if err != nil {
		return nil, err
	}
	d, err := f.dialer()
	if err != nil {
		return nil, err
	}
	var out []nodecli.BackupListing
	for _, m := range ms {
		raw, err := fleet.On(ctx, d, m, fleet.BinPath+" node backup list "+t.b.Metadata.Name+" -o json")
		var ls []nodecli.BackupListing
		if jerr := json.Unmarshal(raw, &ls); jerr != nil || len(ls) == 0 {
			if err == nil {
				err = jerr
			}
			out = append(out, nodecli.BackupListing{Backup: t.b.Metadata.Name, Machine: m.Name, Error: err.Error(), Hint: model.HintOf(err)})
			continue
		}
		out = append(out, ls...)
	}
	return out, nil
}

// remoteRestore restores on machine m; a conflict is asked about on a
// terminal, and refused elsewhere without --yes.
func (g *globals) remoteRestore(ctx context.Context, cmd *cobra.Command, d *fleet.Dialer, m *model.Machine, b *model.Backup, ro backup.RestoreOptions) (*backup.RestoreResult, error) {
	command := func(yes bool) string {
		c := fleet.BinPath + " node backup restore " + b.Metadata.Name + " -o json --snapshot " + shellWord(ro.Snapshot)
		if ro.To != "" {
			c += " --to " + shellWord(ro.To)
		}
		if yes {
			c += " --yes"
		}
		return c
	}
	for _, yes := range []bool{ro.Yes, true} {
		out, err := fleet.On(ctx, d, m, command(yes))
		var ans nodecli.RestoreAnswer
		if jerr := json.Unmarshal(out, &ans); jerr == nil && ans.Result != nil {
			return ans.Result, nil
		}
		if ans.Conflict == nil {
			var je struct{ Error, Hint string }
			if json.Unmarshal(out, &je) == nil && je.Error != "" {
				return nil, model.WithHint(errors.New(je.Error), "%s", je.Hint)
			}
			if err == nil {
				err = errors.New("unreadable answer")
			}
			return nil, err
		}
		if yes || !g.confirm(cmd, fmt.Sprintf("%s: %s. Overwrite?", m.Name, ans.Conflict.Error())) {
			return nil, ans.Conflict
		}
	}
	return nil, errors.New("unreachable")
}

// confirm asks on a terminal; anything else answers no.
func (g *globals) confirm(cmd *cobra.Command, question string) bool {
	in, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return false
	}
	fmt.Fprintf(g.stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(in).ReadString('\n')
	return strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
}

func shellWord(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
