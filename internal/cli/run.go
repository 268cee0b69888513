package cli

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"tend.dev/tend/internal/reconcile"
)

func newRun(g *globals) *cobra.Command {
	var workers int
	var metricsAddr string
	cmd := &cobra.Command{
		Use:     "run",
		Short:   "Keep the cluster equal to git: follow the source at the Cluster's interval and correct drift through watches",
		Example: `  tend run --repo https://git.example.com/ops.git --cluster prod --metrics-addr :9797`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			// The cluster may be down when the agent starts: it retries.
			src, c, err := g.sourceAndCluster(ctx, false)
			if err != nil {
				return err
			}
			log := g.logger(slog.LevelInfo)
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			m := reconcile.NewMetrics(reg)
			if metricsAddr != "" {
				ln, err := net.Listen("tcp", metricsAddr)
				if err != nil {
					return err
				}
				mux := http.NewServeMux()
				mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
				mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
				srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
				go func() {
					if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
						log.Error("metrics server", "err", err)
					}
				}()
				go func() { <-ctx.Done(); _ = srv.Close() }()
				log.Info("serving metrics", "addr", ln.Addr().String())
			}
			ids, err := g.identities(ctx, c)
			if err != nil {
				return err
			}
			r := reconcile.New(reconcile.Options{Source: src, Cluster: g.cluster, Kube: c, Identities: ids, Log: log, Metrics: m, Workers: workers, Events: true})
			log.Info("running", "repo", src.URL(), "cluster", g.cluster)
			return r.Run(ctx)
		},
	}
	cmd.Flags().IntVar(&workers, "workers", 8, "components reconciled at once")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "address to serve Prometheus metrics and /healthz on, e.g. :9797 (off when empty)")
	return cmd
}
