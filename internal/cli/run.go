package cli

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/notify"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
)

func newRun(g *globals) *cobra.Command { return newRunner(g, false) }

func newAgent(g *globals) *cobra.Command { return newRunner(g, true) }

// newRunner builds `tend run` (one process) and `tend agent` (the in-cluster
// form: leader election among replicas, and a webhook receiver).
func newRunner(g *globals, agent bool) *cobra.Command {
	var workers int
	var metricsAddr, webhookAddr, webhookSecretFile string
	var leaderElect bool
	var notifyURLs, slackURLs []string
	var resticBin string
	use, short, example := "run", "Keep the cluster equal to git: follow the source at the Cluster's interval and correct drift through watches",
		`  tend run --repo https://git.example.com/ops.git --cluster prod --metrics-addr :9797`
	if agent {
		use, short, example = "agent", "Run inside the cluster: tend run with leader election among replicas and a webhook receiver for pushes",
			`  TEND_WEBHOOK_SECRET=… tend agent --repo https://git.example.com/ops.git --cluster prod --webhook-addr :9292 --metrics-addr :9797`
	}
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
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
			n := &notify.Notifier{}
			for _, u := range notifyURLs {
				n.Targets = append(n.Targets, notify.Target{URL: u})
			}
			for _, u := range slackURLs {
				n.Targets = append(n.Targets, notify.Target{URL: u, Slack: true})
			}
			n.Start(ctx)
			r := reconcile.New(reconcile.Options{Source: src, Cluster: g.cluster, Kube: c, Identities: ids, Notifier: n, Log: log, Metrics: m, Workers: workers, Events: true,
				Objects: &ClusterObjects{Client: c, Cluster: g.cluster}, Restic: resticBin})
			if webhookAddr != "" {
				secret := []byte(os.Getenv("TEND_WEBHOOK_SECRET"))
				if webhookSecretFile != "" {
					b, err := os.ReadFile(webhookSecretFile)
					if err != nil {
						return err
					}
					secret = []byte(strings.TrimSpace(string(b)))
				}
				if len(secret) == 0 {
					return model.WithHint(errors.New("--webhook-addr needs a secret"), "set TEND_WEBHOOK_SECRET or --webhook-secret-file; tend refuses unauthenticated triggers")
				}
				ln, err := net.Listen("tcp", webhookAddr)
				if err != nil {
					return err
				}
				hook := &source.Webhook{Secret: secret, Trigger: func(sender string) {
					log.Info("webhook: fetching now", "sender", sender)
					r.Trigger()
				}}
				srv := &http.Server{Handler: hook, ReadHeaderTimeout: 10 * time.Second}
				go func() { _ = srv.Serve(ln) }()
				go func() { <-ctx.Done(); _ = srv.Close() }()
				log.Info("webhook receiver", "addr", ln.Addr().String())
			}
			log.Info("running", "repo", src.URL(), "cluster", g.cluster)
			if agent && leaderElect {
				return r.RunLeaderElected(ctx, reconcile.LeaderOptions{})
			}
			return r.Run(ctx)
		},
	}
	cmd.Flags().IntVar(&workers, "workers", 8, "components reconciled at once")
	cmd.Flags().StringVar(&resticBin, "restic", "restic", "restic binary for the cluster's Backups")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "address to serve Prometheus metrics and /healthz on, e.g. :9797 (off when empty)")
	cmd.Flags().StringVar(&webhookAddr, "webhook-addr", "", "address for the push webhook receiver (GitHub, GitLab, Gitea, generic), e.g. :9292")
	cmd.Flags().StringVar(&webhookSecretFile, "webhook-secret-file", "", "file with the webhook secret (or TEND_WEBHOOK_SECRET)")
	cmd.Flags().StringSliceVar(&notifyURLs, "notify-url", nil, "POST every outcome (applied, failed, drift, pruned) as JSON to this URL; repeatable")
	cmd.Flags().StringSliceVar(&slackURLs, "notify-slack-url", nil, "post outcomes to this Slack-compatible incoming webhook; repeatable")
	if agent {
		cmd.Flags().BoolVar(&leaderElect, "leader-elect", true, "elect one writer among replicas through a Lease in tend-system")
	}
	return cmd
}
