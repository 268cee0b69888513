package cli

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"tend.dev/tend/internal/devcluster"
)

func newDev(g *globals) *cobra.Command {
	var dir string
	dev := &cobra.Command{
		Use:   "dev",
		Short: "A local Kubernetes control plane without Docker, for trying tend",
	}
	dev.PersistentFlags().StringVar(&dir, "dir", filepath.Join(devcluster.CacheDir(), "dev"), "where the dev cluster keeps its data")
	up := &cobra.Command{
		Use:   "up",
		Short: "Build (once, about 8 min) and start etcd, kube-apiserver, controller-manager, scheduler and kwok nodes; print the kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kc, ok := devcluster.Running(dir); ok {
				fmt.Fprintf(g.stderr, "dev cluster already running\n")
				fmt.Fprintln(g.stdout, kc)
				return nil
			}
			if m := devcluster.Missing(); len(m) > 0 {
				fmt.Fprintf(g.stderr, "building the control plane from Go modules into %s (once; about 8 min on 2 cores)\n", devcluster.BinDir())
				if err := devcluster.Build(cmd.Context(), g.stderr); err != nil {
					return err
				}
			}
			fmt.Fprintln(g.stderr, "starting the dev cluster")
			c, err := devcluster.Start(context.WithoutCancel(cmd.Context()), devcluster.Options{Dir: dir, Detach: true, Log: g.stderr})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "dev cluster up at %s; use it with:\n  export KUBECONFIG=%s\n", c.Server, c.Kubeconfig)
			fmt.Fprintln(g.stdout, c.Kubeconfig)
			return nil
		},
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Stop the dev cluster (its data stays in --dir)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			stopped, err := devcluster.StopDetached(dir)
			if err != nil {
				return err
			}
			if stopped {
				fmt.Fprintln(g.stderr, "dev cluster stopped")
			} else {
				fmt.Fprintln(g.stderr, "no dev cluster running")
			}
			return nil
		},
	}
	dev.AddCommand(up, down)
	return dev
}
