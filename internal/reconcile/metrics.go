package reconcile

import (
	"github.com/prometheus/client_golang/prometheus"

	"tend.dev/tend/internal/backup"
)

// Metrics are tend's Prometheus metrics; docs/metrics.md describes each.
type Metrics struct {
	Duration   *prometheus.HistogramVec
	Total      *prometheus.CounterVec
	Drift      *prometheus.CounterVec
	Revision   *prometheus.GaugeVec
	Fetch      prometheus.Histogram
	FetchError prometheus.Counter

	BackupLastSuccess, BackupLastResult, BackupBytes, BackupDuration, VerifyLastSuccess *prometheus.GaugeVec
	BackupRuns                                                                          *prometheus.CounterVec
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
	g := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tend_backup_" + name, Help: help}, []string{"cluster", "backup"})
	}
	m.BackupLastSuccess = g("last_success_timestamp_seconds", "When the last successful backup started.")
	m.BackupLastResult = g("last_result", "1 when the last backup succeeded, 0 when it failed.")
	m.BackupBytes = g("last_size_bytes", "What the last successful backup's snapshot holds.")
	m.BackupDuration = g("last_duration_seconds", "How long the last backup took.")
	m.VerifyLastSuccess = g("verify_last_success_timestamp_seconds", "When the last successful restore drill started.")
	m.BackupRuns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tend_backup_runs_total", Help: "Backups and restore drills, by kind and result."},
		[]string{"cluster", "backup", "kind", "result"})
	reg.MustRegister(m.Duration, m.Total, m.Drift, m.Revision, m.Fetch, m.FetchError,
		m.BackupLastSuccess, m.BackupLastResult, m.BackupBytes, m.BackupDuration, m.VerifyLastSuccess, m.BackupRuns)
	return m
}

// ObserveBackup records a backup or drill run of cluster.
func (m *Metrics) ObserveBackup(cluster string, r backup.Run) {
	m.BackupRuns.WithLabelValues(cluster, r.Backup, string(r.Kind), string(r.Result)).Inc()
	ok := r.Result == backup.Succeeded
	switch r.Kind {
	case backup.KindBackup:
		m.BackupDuration.WithLabelValues(cluster, r.Backup).Set(r.Duration.Seconds())
		if !ok {
			m.BackupLastResult.WithLabelValues(cluster, r.Backup).Set(0)
			return
		}
		m.BackupLastResult.WithLabelValues(cluster, r.Backup).Set(1)
		m.BackupLastSuccess.WithLabelValues(cluster, r.Backup).Set(float64(r.Start.UnixNano()) / 1e9)
		m.BackupBytes.WithLabelValues(cluster, r.Backup).Set(float64(r.Bytes))
	case backup.KindVerify:
		if ok {
			m.VerifyLastSuccess.WithLabelValues(cluster, r.Backup).Set(float64(r.Start.UnixNano()) / 1e9)
		}
	}
}
