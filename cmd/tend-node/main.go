// Command tend-node is the machine build of tend: only `tend node`, the
// agent that keeps a machine as its MachinePool in git says. `tend bootstrap
// machines` installs it on each machine as /usr/local/bin/tend. It links
// none of the Kubernetes, Helm or cloud KMS code of the full tend, which
// keeps the idle agent's resident memory small (docs/benchmarks.md).
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/nodecli"
	"tend.dev/tend/internal/term"
	"tend.dev/tend/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var output, logLevel string
	root := &cobra.Command{
		Use:   "tend",
		Short: "tend, machine build: the node agent only",
		Long: `This is the machine build of tend, installed by tend bootstrap machines. It
runs the node agent (tend node run) and answers tend node status, plan and
apply. The full tend, with every other command, runs where you operate from.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	root.PersistentFlags().StringVar(&logLevel, "log-level", "", "log level: debug, info, warn, error (default: info for run, warn otherwise)")
	root.AddCommand(nodecli.New(&nodecli.Env{Stdout: stdout, Stderr: stderr, Output: &output, LogLevel: &logLevel, Version: version.Version}))
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		err = model.WithHint(err, "this is the machine build of tend, which has only `tend node` (status, plan, apply, run); run other commands with the full tend")
	}
	return term.Code(root, err, stdout, stderr)
}
