package reconcile

import "github.com/prometheus/client_golang/prometheus"

// Metrics are tend's Prometheus metrics; docs/metrics.md describes each.
type Metrics struct {
	Duration   *prometheus.HistogramVec
	Total      *prometheus.CounterVec
	Drift      *prometheus.CounterVec
	Revision   *prometheus.GaugeVec
	Fetch      prometheus.Histogram
	FetchError prometheus.Counter
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tend_reconcile_duration_seconds", Help: "Time to reconcile one component.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"cluster", "component"}),
		Total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tend_reconcile_total", Help: "Component reconciles by outcome: applied, unchanged, failed, blocked.",
		}, []string{"cluster", "component", "outcome"}),
		Drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tend_drift_corrections_total", Help: "Objects changed or deleted outside tend and put back.",
		}, []string{"cluster", "component", "kind"}),
		Revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tend_applied_revision_info", Help: "The revision last applied to a component (value 1).",
		}, []string{"cluster", "component", "revision"}),
		Fetch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tend_source_fetch_duration_seconds", Help: "Time to resolve and, when it moved, fetch the source.",
			Buckets: prometheus.DefBuckets,
		}),
		FetchError: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tend_source_fetch_errors_total", Help: "Failed source fetches.",
		}),
	}
	reg.MustRegister(m.Duration, m.Total, m.Drift, m.Revision, m.Fetch, m.FetchError)
	return m
}
