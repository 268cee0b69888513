package node

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tend.dev/tend/internal/backup"
)

// NodeExporterTextfileDir is where Debian's prometheus-node-exporter reads
// textfile metrics; the agent writes there too when the directory exists.
const NodeExporterTextfileDir = "/var/lib/prometheus/node-exporter"

// Metrics are the agent's Prometheus metrics. They are written after every
// run as a node_exporter textfile, not served: machines are scraped through
// the node_exporter they already run, and the agent listens on no port.
type Metrics struct {
	reg                                                            *prometheus.Registry
	inSync, resources, failing, pending, reboot, slotHeld, lastRun prometheus.Gauge
	duration                                                       prometheus.Gauge
	changes                                                        *prometheus.CounterVec
	runs                                                           *prometheus.CounterVec
	revision                                                       *prometheus.GaugeVec

	backupLastSuccess, backupLastResult, backupBytes, backupAdded, backupDuration, verifyLastSuccess *prometheus.GaugeVec
	backupRuns                                                                                       *prometheus.CounterVec
}

// NewMetrics registers the metrics of machine in pool.
func NewMetrics(pool, machine string) *Metrics {
	labels := prometheus.Labels{"pool": pool, "machine": machine}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "tend_node_" + name, Help: help, ConstLabels: labels})
	}
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		inSync:    gauge("in_sync", "1 when the machine matched git after the last run."),
		resources: gauge("resources", "Resources the machine's state holds."),
		failing:   gauge("failing_resources", "Resources that could not be planned or applied in the last run."),
		pending:   gauge("pending_changes", "Disruptive changes waiting for a rollout slot."),
		reboot:    gauge("reboot_required", "1 when an applied change waits for a reboot."),
		slotHeld:  gauge("rollout_slot_held", "1 while the machine holds a rollout slot."),
		lastRun:   gauge("last_run_timestamp_seconds", "When the last run started."),
		duration:  gauge("last_run_duration_seconds", "How long the last run took."),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tend_node_changes_total", ConstLabels: labels,
			Help: "Changes applied: new revisions and drift put back, by action."}, []string{"action"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tend_node_runs_total", ConstLabels: labels,
			Help: "Runs, by result: in_sync, not_in_sync, error (nothing could be applied), stale (git unreachable, the last revision applied)."}, []string{"result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tend_node_revision_info", ConstLabels: labels,
			Help: "The revision the machine runs, as a label."}, []string{"revision"}),
	}
	bgauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tend_node_backup_" + name, Help: help, ConstLabels: labels}, []string{"backup"})
	}
	m.backupLastSuccess = bgauge("last_success_timestamp_seconds", "When the last successful backup started.")
	m.backupLastResult = bgauge("last_result", "1 when the last backup succeeded, 0 when it failed.")
	m.backupBytes = bgauge("last_size_bytes", "What the last successful backup's snapshot holds.")
	m.backupAdded = bgauge("last_added_bytes", "What the last successful backup uploaded.")
	m.backupDuration = bgauge("last_duration_seconds", "How long the last backup took.")
	m.verifyLastSuccess = bgauge("verify_last_success_timestamp_seconds", "When the last successful restore drill started.")
	m.backupRuns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tend_node_backup_runs_total", ConstLabels: labels,
		Help: "Backups and restore drills run, by backup, kind and result."}, []string{"backup", "kind", "result"})
	m.reg.MustRegister(m.backupLastSuccess, m.backupLastResult, m.backupBytes, m.backupAdded, m.backupDuration, m.verifyLastSuccess, m.backupRuns)
	m.reg.MustRegister(m.inSync, m.resources, m.failing, m.pending, m.reboot, m.slotHeld, m.lastRun, m.duration, m.changes, m.runs, m.revision)
	return m
}

// Observe records a run's status.
func (m *Metrics) Observe(st *Status) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	m.inSync.Set(b(st.InSync))
	m.resources.Set(float64(st.Resources))
	m.failing.Set(float64(len(st.Failing)))
	m.pending.Set(float64(len(st.Pending)))
	m.reboot.Set(b(st.RebootRequired))
	m.slotHeld.Set(b(strings.HasPrefix(st.Slot, "held")))
	m.lastRun.Set(float64(st.Time.UnixNano()) / 1e9)
	if d, err := time.ParseDuration(st.Duration); err == nil {
		m.duration.Set(d.Seconds())
	}
	for _, c := range st.Changed {
		m.changes.WithLabelValues(string(c.Action)).Inc()
	}
	result := "not_in_sync"
	switch {
	case st.LastError != "" && st.Revision == "":
		result = "error"
	case st.LastError != "":
		result = "stale"
	case st.InSync:
		result = "in_sync"
	}
	m.runs.WithLabelValues(result).Inc()
	if st.Revision != "" {
		m.revision.Reset()
		m.revision.WithLabelValues(st.Revision).Set(1)
	}
}

// ObserveBackup records a backup or drill run.
func (m *Metrics) ObserveBackup(r backup.Run) {
	m.backupRuns.WithLabelValues(r.Backup, string(r.Kind), string(r.Result)).Inc()
	ok := r.Result == backup.Succeeded
	switch r.Kind {
	case backup.KindBackup:
		m.backupDuration.WithLabelValues(r.Backup).Set(r.Duration.Seconds())
		if ok {
			m.backupLastResult.WithLabelValues(r.Backup).Set(1)
			m.backupLastSuccess.WithLabelValues(r.Backup).Set(float64(r.Start.UnixNano()) / 1e9)
			m.backupBytes.WithLabelValues(r.Backup).Set(float64(r.Bytes))
			m.backupAdded.WithLabelValues(r.Backup).Set(float64(r.Added))
		} else {
			m.backupLastResult.WithLabelValues(r.Backup).Set(0)
		}
	case backup.KindVerify:
		if ok {
			m.verifyLastSuccess.WithLabelValues(r.Backup).Set(float64(r.Start.UnixNano()) / 1e9)
		}
	}
}

// Write writes the metrics, atomically, to stateDir/metrics.prom and, when
// node_exporter's textfile directory exists, to tend.prom there.
func (m *Metrics) Write(stateDir, textfileDir string) error {
	if err := prometheus.WriteToTextfile(filepath.Join(stateDir, "metrics.prom"), m.reg); err != nil {
		return err
	}
	if st, err := os.Stat(textfileDir); err == nil && st.IsDir() {
		return prometheus.WriteToTextfile(filepath.Join(textfileDir, "tend.prom"), m.reg)
	}
	return nil
}
