// Package nodecli is the `tend node` command, the agent on every machine of
// a MachinePool. It is a package of its own so that the machine build of
// tend (cmd/tend-node) links only the machine side: none of the Kubernetes,
// Helm or cloud KMS code, which would triple the agent's resident memory.
package nodecli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/machine"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/node"
	"tend.dev/tend/internal/rollout"
	_ "tend.dev/tend/internal/source/gogit" // the agent fetches git remotes
	"tend.dev/tend/internal/term"
)

// Env is what the node commands need of the root command.
type Env struct {
	Stdout, Stderr io.Writer
	// Output and LogLevel point at the root's -o and --log-level flags.
	Output, LogLevel *string
	Version          string
}

func (g *Env) json() bool { return g.Output != nil && *g.Output == "json" }

func (g *Env) printJSON(v any) error { return term.PrintJSON(g.Stdout, v) }

// logger logs to stderr at --log-level, or at def when it is not given.
func (g *Env) logger(def slog.Level) *slog.Logger {
	lvl := def
	if g.LogLevel != nil && *g.LogLevel != "" {
		_ = lvl.UnmarshalText([]byte(*g.LogLevel))
	}
	return slog.New(slog.NewTextHandler(g.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// New returns the `node` command.
func New(g *Env) *cobra.Command {
	var cfgPath, stateDir string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "The agent on each machine of a MachinePool: run, apply once, plan, status",
		Long: `tend node runs on every machine of a pool, installed by tend bootstrap machines.
It fetches the ops repository, finds its own machine, and keeps it as git says.`,
	}
	cmd.PersistentFlags().StringVar(&cfgPath, "config", node.DefaultConfig, "node agent config, written by tend bootstrap machines")
	agent := func() (*node.Agent, error) {
		cfg, err := node.LoadConfig(cfgPath)
		if err != nil {
			return nil, err
		}
		return &node.Agent{Config: cfg, Sys: machine.Host(), Version: g.Version,
			Reboot: func(ctx context.Context) error {
				_, err := machine.Shell(ctx, machine.Host(), "systemctl reboot")
				return err
			}}, nil
	}

	run := &cobra.Command{
		Use:   "run",
		Short: "Converge this machine every interval (the systemd service runs this)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := agent()
			if err != nil {
				return err
			}
			log := g.logger(slog.LevelInfo)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			log.Info("node agent started", "machine", a.Config.Machine, "pool", a.Config.Pool, "repo", a.Config.Repo, "version", g.Version)
			metrics := node.NewMetrics(a.Config.Pool, a.Config.Machine)
			notifyFailed := Notifier(ctx, a.Config.Machine)
			a.OnBackup = func(b *model.Backup, run backup.Run) {
				level := slog.LevelInfo
				if run.Result != backup.Succeeded {
					level = slog.LevelError
				}
				log.Log(ctx, level, string(run.Kind), "backup", b.Metadata.Name, "result", run.Result, "trigger", run.Trigger,
					"snapshot", run.Snapshot, "bytes", run.Bytes, "added", run.Added, "duration", run.Duration, "error", run.Error, "hint", run.Hint)
				metrics.ObserveBackup(run)
				notifyFailed(b, run)
			}
			a.Run(ctx, func(st *node.Status) {
				logStatus(log, st)
				metrics.Observe(st)
				if err := metrics.Write(a.Config.StateDir, node.NodeExporterTextfileDir); err != nil {
					log.Warn("write metrics", "error", err)
				}
				// The agent sleeps until the next run: give the heap of
				// this one (a git fetch, the repository) back to the machine.
				debug.FreeOSMemory()
			})
			return nil
		},
	}
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Converge this machine once; exit 1 when it is not in sync afterwards",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := agent()
			if err != nil {
				return err
			}
			st := a.Once(cmd.Context())
			if g.json() {
				if err := g.printJSON(st); err != nil {
					return err
				}
			} else {
				printNodeStatus(g.Stdout, st)
			}
			if st.LastError != "" && st.Revision == "" {
				return term.Silent{}
			}
			if !st.InSync {
				return term.NotClean{Msg: "not in sync"}
			}
			return nil
		},
	}
	plan := &cobra.Command{
		Use:   "plan",
		Short: "Show what the next apply would change, changing nothing; exit 1 when it would change something",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := agent()
			if err != nil {
				return err
			}
			p, plan, err := a.Plan(cmd.Context())
			if err != nil {
				return err
			}
			if g.json() {
				if err := g.printJSON(struct {
					Machine  string `json:"machine"`
					Revision string `json:"revision"`
					*machine.Plan
				}{p.Machine.Name, p.Revision, plan}); err != nil {
					return err
				}
			} else {
				PrintPlan(g.Stdout, p.Machine.Name, p.Revision, plan)
			}
			if len(plan.Changes) > 0 || len(plan.Errors) > 0 {
				return term.NotClean{Msg: "changes"}
			}
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the agent's last run: revision, in sync or not, what changed, what fails",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := stateDir
			if dir == "" {
				if cfg, err := node.LoadConfig(cfgPath); err == nil {
					dir = cfg.StateDir
				} else {
					dir = "/var/lib/tend/node"
				}
			}
			st, err := node.ReadStatus(dir)
			if err != nil {
				return err
			}
			if g.json() {
				if err := g.printJSON(st); err != nil {
					return err
				}
			} else {
				printNodeStatus(g.Stdout, st)
			}
			if !st.InSync {
				return term.NotClean{Msg: "not in sync"}
			}
			return nil
		},
	}
	status.Flags().StringVar(&stateDir, "state-dir", "", "agent state directory (default from the config)")

	var keyFile string
	slotKey := &cobra.Command{
		Use:    "slot-key",
		Short:  "Create this machine's rollout slot key if missing and print its public half",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := ensureKey(keyFile)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.Stdout, pub)
			return nil
		},
	}
	slotKey.Flags().StringVar(&keyFile, "file", "/etc/tend/slot_key", "private key file")

	var pool, holder, dir string
	slots := &cobra.Command{
		Use:   "slots [acquire MAX REASON | note REASON | release | list]",
		Short: "Rollout slots on the coordinator; agents reach it over SSH as a forced command",
		Long: `Run on the pool's coordinator. Other machines' agents reach it over SSH as the
user tend-slots, whose authorized_keys fixes --pool and --holder per key; the
command then comes from SSH_ORIGINAL_COMMAND.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			command := strings.Join(args, " ")
			if c := os.Getenv("SSH_ORIGINAL_COMMAND"); c != "" {
				command = c
			}
			if pool == "" || holder == "" && !strings.HasPrefix(command, "list") {
				return model.WithHint(errors.New("--pool and --holder are required"), "this command is meant to be run by tend itself")
			}
			out, err := rollout.Store{Dir: dir}.Serve(pool, holder, command)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.Stdout, string(out))
			return nil
		},
	}
	slots.Flags().StringVar(&pool, "pool", "", "pool name")
	slots.Flags().StringVar(&holder, "holder", "", "machine taking or releasing the slot")
	slots.Flags().StringVar(&dir, "dir", rollout.DefaultDir, "slot directory")
	cmd.AddCommand(run, apply, plan, status, slotKey, slots, newBackup(g, agent))
	return cmd
}

func logStatus(log *slog.Logger, st *node.Status) {
	for _, c := range st.Changed {
		log.Info("changed", "resource", c.Resource, "action", c.Action, "details", strings.Join(shortDetails(c.Details), "; "))
	}
	for _, f := range st.Failing {
		log.Error("failing", "resource", f.Resource, "error", f.Error, "hint", f.Hint)
	}
	for _, p := range st.Pending {
		log.Warn("waiting for a rollout slot", "change", p, "slot", st.Slot)
	}
	if st.LastError != "" {
		log.Error("run", "error", st.LastError, "hint", st.LastHint)
	}
	log.Info("converged", "revision", st.Revision, "inSync", st.InSync, "resources", st.Resources, "changed", len(st.Changed), "duration", st.Duration)
}

// shortDetails keeps log lines short: a long diff is cut after 6 lines.
func shortDetails(d []string) []string {
	if len(d) > 6 {
		return append(d[:6:6], fmt.Sprintf("… %d more lines", len(d)-6))
	}
	return d
}

func printNodeStatus(w io.Writer, st *node.Status) {
	sync := "in sync"
	if !st.InSync {
		sync = "NOT in sync"
	}
	fmt.Fprintf(w, "machine %s (pool %s): %s at %s\n", st.Machine, st.Pool, sync, orNoRev(st.Revision))
	fmt.Fprintf(w, "last run %s, took %s, %d resources\n", st.Time.Local().Format(time.RFC3339), st.Duration, st.Resources)
	if st.LastError != "" {
		fmt.Fprintf(w, "error: %s\n", st.LastError)
		if st.LastHint != "" {
			fmt.Fprintf(w, "  hint: %s\n", st.LastHint)
		}
	}
	if st.Slot != "" {
		fmt.Fprintf(w, "rollout slot: %s\n", st.Slot)
	}
	if st.RebootRequired {
		fmt.Fprintln(w, "a reboot is required for a change to take effect")
	}
	if len(st.Changed)+len(st.Failing)+len(st.Pending) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nRESOURCE\tSTATE\tDETAIL")
	for _, c := range st.Changed {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Resource, c.Action+"d", term.OneLine(firstDetail(c.Details), 70))
	}
	for _, f := range st.Failing {
		fmt.Fprintf(tw, "%s\tfailed\t%s\n", f.Resource, term.OneLine(f.Error, 90))
	}
	for _, p := range st.Pending {
		fmt.Fprintf(tw, "%s\tpending\twaiting for a rollout slot\n", p)
	}
	tw.Flush()
}

func firstDetail(d []string) string {
	for _, l := range d {
		if !strings.HasPrefix(l, "---") && !strings.HasPrefix(l, "+++") && !strings.HasPrefix(l, "@@") {
			return l
		}
	}
	if len(d) > 0 {
		return d[0]
	}
	return ""
}

// PrintPlan prints what the next apply on machine name would change.
func PrintPlan(w io.Writer, name, rev string, p *machine.Plan) {
	if len(p.Changes) == 0 && len(p.Errors) == 0 {
		fmt.Fprintf(w, "%s: in sync at %s (%d resources)\n", name, orNoRev(rev), p.Resources)
		return
	}
	fmt.Fprintf(w, "%s: %d to change at %s (%d resources)\n", name, len(p.Changes), orNoRev(rev), p.Resources)
	for _, c := range p.Changes {
		flag := ""
		if c.Disruptive {
			flag = " (disruptive: takes a rollout slot)"
		}
		if c.Reboot {
			flag += " (needs a reboot)"
		}
		fmt.Fprintf(w, "  %s %s%s\n", c.Action, c.Resource, flag)
		for _, d := range c.Details {
			fmt.Fprintf(w, "      %s\n", d)
		}
	}
	for _, e := range p.Errors {
		fmt.Fprintf(w, "  error %s: %s\n", e.Resource, e.Error)
		if e.Hint != "" {
			fmt.Fprintf(w, "      hint: %s\n", e.Hint)
		}
	}
}

func orNoRev(s string) string {
	if s == "" {
		return "(no revision)"
	}
	return s
}

// ensureKey creates an ed25519 key at file if missing and returns the
// public key in authorized_keys form.
func ensureKey(file string) (string, error) {
	if b, err := os.ReadFile(file); err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return "", fmt.Errorf("%s: %w", file, err)
		}
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))), nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "tend slot key")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))), nil
}
