package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"tend.dev/tend/internal/machine"
)

func TestMetrics(t *testing.T) {
	m := NewMetrics("web", "m1")
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	m.Observe(&Status{Revision: "main@sha1:aaa", Time: at, Duration: "1.5s", Resources: 14, InSync: false,
		Changed: []machine.Result{{Change: machine.Change{Action: machine.Update}}, {Change: machine.Change{Action: machine.Create}}},
		Failing: []machine.ResourceError{{Resource: "package x"}}, Pending: []string{"update firewall"}, Slot: "held: health check failed", RebootRequired: true})
	m.Observe(&Status{Revision: "main@sha1:bbb", Time: at.Add(time.Minute), Duration: "20ms", Resources: 14, InSync: true,
		Changed: []machine.Result{{Change: machine.Change{Action: machine.Update}}}})
	m.Observe(&Status{Revision: "main@sha1:bbb", Time: at.Add(2 * time.Minute), Duration: "30ms", Resources: 14, LastError: "fetch: unreachable"})
	m.Observe(&Status{Time: at.Add(3 * time.Minute), Duration: "1ms", LastError: "fetch: unreachable"})

	want := `
# HELP tend_node_changes_total Changes applied: new revisions and drift put back, by action.
# TYPE tend_node_changes_total counter
tend_node_changes_total{action="create",machine="m1",pool="web"} 1
tend_node_changes_total{action="update",machine="m1",pool="web"} 2
# HELP tend_node_in_sync 1 when the machine matched git after the last run.
# TYPE tend_node_in_sync gauge
tend_node_in_sync{machine="m1",pool="web"} 0
# HELP tend_node_revision_info The revision the machine runs, as a label.
# TYPE tend_node_revision_info gauge
tend_node_revision_info{machine="m1",pool="web",revision="main@sha1:bbb"} 1
# HELP tend_node_runs_total Runs, by result: in_sync, not_in_sync, error (nothing could be applied), stale (git unreachable, the last revision applied).
# TYPE tend_node_runs_total counter
tend_node_runs_total{machine="m1",pool="web",result="error"} 1
tend_node_runs_total{machine="m1",pool="web",result="in_sync"} 1
tend_node_runs_total{machine="m1",pool="web",result="not_in_sync"} 1
tend_node_runs_total{machine="m1",pool="web",result="stale"} 1
# HELP tend_node_last_run_duration_seconds How long the last run took.
# TYPE tend_node_last_run_duration_seconds gauge
tend_node_last_run_duration_seconds{machine="m1",pool="web"} 0.001
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), "tend_node_changes_total", "tend_node_in_sync",
		"tend_node_revision_info", "tend_node_runs_total", "tend_node_last_run_duration_seconds"); err != nil {
		t.Fatal(err)
	}

	state, textfiles := t.TempDir(), filepath.Join(t.TempDir(), "node-exporter")
	if err := m.Write(state, textfiles); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(textfiles, "tend.prom")); !os.IsNotExist(err) {
		t.Errorf("wrote into a textfile directory that does not exist: %v", err)
	}
	os.Mkdir(textfiles, 0o755)
	if err := m.Write(state, textfiles); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(state, "metrics.prom"), filepath.Join(textfiles, "tend.prom")} {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), `tend_node_resources{machine="m1",pool="web"} 0`) {
			t.Errorf("%s: %v\n%s", f, err, b)
		}
	}
}
