package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/fleet"
	"tend.dev/tend/internal/machine"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/node"
	"tend.dev/tend/internal/nodecli"
	"tend.dev/tend/internal/rollout"
	"tend.dev/tend/internal/source/gogit"
)

// poolFlags are the flags of commands that reach a pool's machines.
type poolFlags struct {
	pool    string
	sshKeys []string
	timeout time.Duration
}

func (f *poolFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.pool, "pool", "", "the MachinePool: its file (machines/web.yaml) or its name")
	home, _ := os.UserHomeDir()
	cmd.Flags().StringSliceVarP(&f.sshKeys, "identity", "i", []string{filepath.Join(home, ".ssh/id_ed25519")}, "SSH private key(s) the machines accept")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 2*time.Minute, "bound on the whole operation")
}

func (f *poolFlags) dialer() (*fleet.Dialer, error) {
	var signers []ssh.Signer
	for _, k := range f.sshKeys {
		s, err := fleet.LoadSigner(k)
		if err != nil {
			return nil, err
		}
		signers = append(signers, s)
	}
	return &fleet.Dialer{Signers: signers}, nil
}

// loadPool finds the pool given as a file or a name. Only the pool must be
// valid: a broken file elsewhere in the repository does not stop it.
func (g *globals) loadPool(arg string) (*model.MachinePool, string, error) {
	if arg == "" {
		return nil, "", model.WithHint(errors.New("--pool is required"), "pass the pool's file, e.g. --pool machines/web.yaml, or its name")
	}
	root := g.repo
	rel := ""
	if fi, err := os.Stat(arg); err == nil && !fi.IsDir() {
		abs, _ := filepath.Abs(arg)
		if root == "" {
			root = repoRootOf(filepath.Dir(abs))
		}
		r, _ := filepath.Abs(root)
		rel, _ = filepath.Rel(r, abs)
		rel = filepath.ToSlash(rel)
	}
	if root == "" {
		root = "."
	}
	repo, lerr := model.Load(root)
	if repo == nil {
		return nil, "", lerr
	}
	for _, p := range repo.MachinePools {
		if p.Metadata.Name == arg || p.Origin.File == rel {
			return p, root, nil
		}
	}
	// Report the pool's own problems, if it has any.
	var mine model.Errors
	for _, e := range repo.Problems {
		if rel != "" && e.Origin.File == rel && !e.Warning {
			mine = append(mine, e)
		}
	}
	if len(mine) > 0 {
		return nil, "", mine
	}
	if rel != "" {
		return nil, "", model.WithHint(fmt.Errorf("%s holds no MachinePool", arg), "the file needs apiVersion: tend.dev/v1alpha1 and kind: MachinePool")
	}
	_, err := repo.MachinePool(arg)
	return nil, "", err
}

// repoRootOf walks up to the directory holding .git, or returns dir.
func repoRootOf(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, ".git")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

func newBootstrapMachines(g *globals) *cobra.Command {
	var pf poolFlags
	var binary string
	var allowWritable bool
	cmd := &cobra.Command{
		Use:   "machines",
		Short: "Install or upgrade the node agent on every machine of a pool, over SSH with pinned host keys",
		Example: `  TEND_GIT_TOKEN=<read-only token> tend bootstrap machines --pool machines/web.yaml \
      --repo https://git.example.test/ops.git --age-identity machines.agekey`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.repo == "" || strings.HasPrefix(g.repo, "/") || strings.HasPrefix(g.repo, ".") {
				return model.WithHint(errors.New("--repo must be the URL the machines fetch from"), "e.g. --repo https://git.example.test/ops.git; the pool file is read from --pool")
			}
			repoURL := g.repo
			g.repo = ""
			p, _, err := g.loadPool(pf.pool)
			if err != nil {
				return err
			}
			d, err := pf.dialer()
			if err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			bin, from, warn, err := fleet.AgentBinary(binary, exe)
			if err != nil {
				return err
			}
			if warn != "" {
				fmt.Fprintf(g.stderr, "warning: %s\n", warn)
			}
			fmt.Fprintf(g.stderr, "agent: %s (%.1f MB)\n", from, float64(len(bin))/1e6)
			so, err := g.sourceOptions()
			if err != nil {
				return err
			}
			// Least privilege: a machine that can push can change what
			// every machine runs.
			if !allowWritable && !strings.HasPrefix(repoURL, "file://") {
				so.Ref = ""
				switch can, err := gogit.CanPush(cmd.Context(), repoURL, so); {
				case err != nil:
					fmt.Fprintf(g.stderr, "warning: could not check that the machines' git credential is read-only: %v\n", err)
				case can:
					return model.WithHint(fmt.Errorf("the git credential for the machines can push to %s; machines must only read", gogit.Redact(repoURL)),
						"give the machines a read-only deploy token (GitHub: a deploy key without write access; GitLab: a deploy token with read_repository; Gitea: a read-only token), or pass --allow-writable-credential")
				}
			}
			o := fleet.BootstrapOptions{Binary: bin, Repo: repoURL, Ref: g.revision}
			if tok := firstNonEmpty(so.Token, so.Password); tok != "" {
				o.Credential = tok
				if so.Username != "" {
					o.Credential = so.Username + ":" + tok
				}
			}
			if g.ageIdentity != "" {
				if o.AgeIdentity, err = os.ReadFile(g.ageIdentity); err != nil {
					return model.WithHint(fmt.Errorf("read --age-identity: %w", err), "the file holds an AGE-SECRET-KEY-1… line")
				}
			}
			if !g.json() {
				o.Progress = func(m, msg string) { fmt.Fprintf(g.stderr, "%-12s %s\n", m, msg) }
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), pf.timeout)
			defer cancel()
			res := fleet.Bootstrap(ctx, d, p, o)
			failed := 0
			for _, r := range res {
				if r.Err() != nil {
					failed++
				}
			}
			if g.json() {
				if err := g.printJSON(res); err != nil {
					return err
				}
			} else {
				for _, r := range res {
					if r.Err() != nil {
						printError(g.stderr, r.Err())
					}
				}
				fmt.Fprintf(g.stdout, "%d of %d machines bootstrapped\n", len(res)-failed, len(res))
			}
			if failed > 0 {
				return silentErr{}
			}
			return nil
		},
	}
	pf.add(cmd)
	cmd.Flags().BoolVar(&allowWritable, "allow-writable-credential", false, "install a git credential that can push (refused by default: machines should only read)")
	cmd.Flags().StringVar(&binary, "binary", "", "agent executable to install (default: tend-node beside this tend, else this tend); a linux build of ./cmd/tend-node")
	return cmd
}

func newMachines(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "machines",
		Short: "See a pool's machines: status and pending changes, gathered over SSH",
	}
	var spf poolFlags
	status := &cobra.Command{
		Use:   "status",
		Short: "One table of every machine: revision, in sync or drifted, failing resources, last seen; exit 1 unless all are in sync",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, _, err := g.loadPool(spf.pool)
			if err != nil {
				return err
			}
			d, err := spf.dialer()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), spf.timeout)
			defer cancel()
			answers := fleet.Each(ctx, d, p, fleet.BinPath+" node status -o json")
			var slots rollout.Slots
			if coord := p.Coordinator(); coord != nil {
				if out, err := fleet.On(ctx, d, coord, fleet.BinPath+" node slots --pool "+p.Metadata.Name+" list"); err == nil {
					json.Unmarshal(out, &slots)
				}
			}
			type row struct {
				Machine string       `json:"machine"`
				Status  *node.Status `json:"status,omitempty"`
				Error   string       `json:"error,omitempty"`
				Hint    string       `json:"hint,omitempty"`
			}
			var rows []row
			clean := true
			for _, a := range answers {
				var st node.Status
				r := row{Machine: a.Machine}
				// node status exits 1 when not in sync, with its JSON on stdout.
				if err := json.Unmarshal(a.Out, &st); err == nil && st.Machine != "" {
					r.Status = &st
				} else if a.Err != nil {
					r.Error, r.Hint = a.Err.Error(), model.HintOf(a.Err)
				} else {
					r.Error = "unreadable status"
				}
				if r.Status == nil || !r.Status.InSync {
					clean = false
				}
				rows = append(rows, r)
			}
			if g.json() {
				if err := g.printJSON(map[string]any{"pool": p.Metadata.Name, "machines": rows, "slots": slots.Holders}); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "MACHINE\tREVISION\tSYNC\tFAILING\tLAST SEEN\tSLOT")
				for _, r := range rows {
					if r.Status == nil {
						fmt.Fprintf(tw, "%s\t-\tunreachable\t-\t-\t-\n", r.Machine)
						continue
					}
					st := r.Status
					sync := "in sync"
					switch {
					case len(st.Pending) > 0:
						sync = "pending"
					case st.RebootRequired:
						sync = "reboot required"
					case !st.InSync:
						sync = "drifted"
					}
					var failing []string
					for _, f := range st.Failing {
						failing = append(failing, f.Resource)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Machine, shortRev(orDash(st.Revision)), sync, orDash(strings.Join(failing, ", ")),
						ago(st.Time), orDash(slotOf(slots, r.Machine)))
				}
				tw.Flush()
				for _, r := range rows {
					if r.Error != "" {
						fmt.Fprintf(g.stderr, "%s: %s\n", r.Machine, r.Error)
						if r.Hint != "" {
							fmt.Fprintf(g.stderr, "  hint: %s\n", r.Hint)
						}
					} else if st := r.Status; st.LastError != "" || len(st.Failing) > 0 {
						for _, f := range st.Failing {
							fmt.Fprintf(g.stdout, "%s: %s: %s\n", r.Machine, f.Resource, f.Error)
						}
						if st.LastError != "" {
							fmt.Fprintf(g.stdout, "%s: %s\n", r.Machine, st.LastError)
						}
					}
					if r.Status != nil {
						for _, b := range r.Status.Backups {
							for _, run := range []*backup.Run{b.Last, b.LastVerify} {
								if run != nil && run.Result != backup.Succeeded {
									fmt.Fprintf(g.stdout, "%s: %s %s failed %s: %s\n", r.Machine, run.Kind, b.Name, ago(run.Start), oneLine(run.Error, 120))
								}
							}
						}
					}
				}
			}
			if !clean {
				return notClean{Msg: "not all in sync"}
			}
			return nil
		},
	}
	spf.add(status)

	var dpf poolFlags
	diff := &cobra.Command{
		Use:   "diff",
		Short: "Per machine, what the next apply would change; exit 1 when anything would",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, _, err := g.loadPool(dpf.pool)
			if err != nil {
				return err
			}
			d, err := dpf.dialer()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), dpf.timeout)
			defer cancel()
			answers := fleet.Each(ctx, d, p, fleet.BinPath+" node plan -o json")
			type planOut struct {
				Machine  string `json:"machine"`
				Revision string `json:"revision"`
				machine.Plan
				Error string `json:"error,omitempty"`
			}
			var out []planOut
			clean, failed := true, false
			for _, a := range answers {
				var po planOut
				if err := json.Unmarshal(a.Out, &po); err != nil || po.Machine == "" {
					po = planOut{Machine: a.Machine, Error: "no plan"}
					if a.Err != nil {
						po.Error = a.Err.Error()
					}
					failed = true
				}
				if len(po.Changes) > 0 || len(po.Errors) > 0 {
					clean = false
				}
				out = append(out, po)
			}
			if g.json() {
				if err := g.printJSON(out); err != nil {
					return err
				}
			} else {
				for _, po := range out {
					if po.Error != "" {
						fmt.Fprintf(g.stdout, "%s: %s\n", po.Machine, po.Error)
						continue
					}
					pl := po.Plan
					nodecli.PrintPlan(g.stdout, po.Machine, po.Revision, &pl)
				}
			}
			if failed {
				return silentErr{}
			}
			if !clean {
				return notClean{Msg: "changes"}
			}
			return nil
		},
	}
	dpf.add(diff)

	var rpf poolFlags
	var which string
	release := &cobra.Command{
		Use:   "release",
		Short: "Free a machine's rollout slot by hand, after fixing what made its health check fail",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, _, err := g.loadPool(rpf.pool)
			if err != nil {
				return err
			}
			if _, err := p.Machine(which); err != nil {
				return err
			}
			d, err := rpf.dialer()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), rpf.timeout)
			defer cancel()
			if _, err := fleet.On(ctx, d, p.Coordinator(), fleet.BinPath+" node slots --pool "+p.Metadata.Name+" --holder "+which+" release"); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "slot of %s released\n", which)
			return nil
		},
	}
	rpf.add(release)
	release.Flags().StringVar(&which, "machine", "", "machine whose slot to free")
	cmd.AddCommand(status, diff, release)
	return cmd
}

func slotOf(s rollout.Slots, m string) string {
	for _, h := range s.Holders {
		if h.Machine == m {
			if h.Reason != "" {
				return "held: " + oneLine(h.Reason, 50)
			}
			return "held"
		}
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}
