// Package node measures the node agent (tend-node) on a real test machine:
// a no-op converge of 50 resources, the processes it starts, and the idle
// agent's memory, against baselines measured in the same run on the same
// machine: apt's own check, sshd, and the full tend installed as the agent.
//
//	go test ./bench/node -run '^$' -bench . -benchtime 20x
package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tend.dev/tend/internal/cli"
	"tend.dev/tend/internal/node"
	"tend.dev/tend/internal/testenv"
)

// state50 is 50 resources: 40 files, 4 directories, 2 symlinks, 2
// packages, sysctls and a unit.
func state50(aptLine string) string {
	var b strings.Builder
	b.WriteString("  state:\n    files:\n")
	fmt.Fprintf(&b, "    - {path: /etc/apt/sources.list.d/bench.list, content: %q}\n", aptLine)
	for i := range 39 {
		fmt.Fprintf(&b, "    - {path: /etc/bench/f%02d.conf, content: \"key%d=value\\n\"}\n", i, i)
	}
	b.WriteString("    directories:\n")
	for i := range 4 {
		fmt.Fprintf(&b, "    - {path: /srv/bench%d, mode: \"0750\"}\n", i)
	}
	b.WriteString("    symlinks:\n    - {path: /srv/bench0/a, target: /etc/bench/f00.conf}\n    - {path: /srv/bench0/b, target: /etc/bench/f01.conf}\n")
	b.WriteString("    packages: [{name: bench-a}, {name: bench-b}]\n")
	b.WriteString("    sysctls: {net.ipv4.ip_forward: \"1\"}\n")
	b.WriteString("    units:\n    - name: bench.service\n      content: |\n        [Service]\n        ExecStart=/bin/sleep infinity\n        [Install]\n        WantedBy=multi-user.target\n")
	return b.String()
}

func BenchmarkNoopConverge50(b *testing.B) {
	ms := testenv.NewMachines(b, 1)
	m := ms.List[0]
	bin := testenv.NodeBinary(b)
	git := testenv.NewGitServerOn(b, ms.Gateway, "", "")
	git.SetReadOnly(true)
	wt := git.Repo(b, "ops")
	apt := ms.AptRepo(b, []testenv.Deb{{Name: "bench-a", Version: "1"}, {Name: "bench-b", Version: "1"}})
	pool := fmt.Sprintf("apiVersion: tend.dev/v1alpha1\nkind: MachinePool\nmetadata: {name: bench}\nspec:\n  interval: 1h\n  machines:\n  - {name: %s, address: %s, hostKey: %q}\n%s",
		m.Name, m.IP, m.HostKey, state50(apt))
	wt.Write(b, map[string]string{"machines/bench.yaml": pool})
	wt.Commit(b, "bench pool")
	var out, errb bytes.Buffer
	if code := cli.Main(context.Background(), []string{"bootstrap", "machines", "--pool", filepath.Join(wt.Dir, "machines/bench.yaml"),
		"--repo", git.URL + "/ops.git", "-i", ms.ClientKey, "--binary", bin}, &out, &errb); code != 0 {
		b.Fatalf("bootstrap: %s%s", out.String(), errb.String())
	}
	apply := func() node.Status {
		var st node.Status
		o := m.Run(b, "tend node apply -o json || true")
		if err := json.Unmarshal([]byte(o), &st); err != nil {
			b.Fatalf("%v: %s", err, o)
		}
		return st
	}
	// First converge (installs everything), then wait for the agent's own.
	if st := apply(); !st.InSync {
		if st = apply(); !st.InSync {
			b.Fatalf("not in sync: %+v", st)
		}
	}
	if st := apply(); st.Resources != 50 || len(st.Changed) != 0 {
		b.Fatalf("want a no-op over 50 resources: %d resources, %d changed", st.Resources, len(st.Changed))
	}

	var total time.Duration
	var procs, pm int64
	var baseline time.Duration
	b.ResetTimer()
	for range b.N {
		st := apply()
		d, _ := time.ParseDuration(st.Duration)
		total += d
		procs += st.Processes
		pm += st.PackageManagerRuns
		if len(st.Changed) != 0 || !st.InSync {
			b.Fatalf("a no-op converge changed something: %+v", st.Changed)
		}
		// Baseline: how long apt itself takes to find that the same two
		// packages are installed (what an agent asking apt each run pays).
		o := m.Run(b, "s=$(date +%s%N); apt-get install -s -q bench-a bench-b >/dev/null; echo $(( $(date +%s%N) - s ))")
		ns, _ := strconv.ParseInt(strings.TrimSpace(o), 10, 64)
		baseline += time.Duration(ns)
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "converge-ms")
	b.ReportMetric(float64(procs)/float64(b.N), "processes/op")
	b.ReportMetric(float64(pm)/float64(b.N), "pkgmgr/op")
	b.ReportMetric(float64(baseline.Milliseconds())/float64(b.N), "baseline-apt-check-ms")

	// Idle memory of the agent service, after it has run a few times.
	m.Run(b, "systemctl restart tend-node")
	time.Sleep(5 * time.Second)
	rss := func(pidCmd string) float64 {
		b.Log(m.Run(b, "grep -E 'Rss|VmRSS' /proc/$("+pidCmd+")/status"))
		o := m.Run(b, "grep VmRSS /proc/$("+pidCmd+")/status | awk '{print $2}'")
		kb, _ := strconv.ParseFloat(strings.TrimSpace(o), 64)
		return kb / 1024
	}
	b.ReportMetric(rss("systemctl show -p MainPID --value tend-node"), "agent-idle-rss-MB")
	b.ReportMetric(rss("systemctl show -p MainPID --value ssh"), "baseline-sshd-rss-MB")

	// Baseline: the full tend installed as the agent, as before tend-node,
	// idle in the same way on the same machine.
	out.Reset()
	errb.Reset()
	if code := cli.Main(context.Background(), []string{"bootstrap", "machines", "--pool", filepath.Join(wt.Dir, "machines/bench.yaml"),
		"--repo", git.URL + "/ops.git", "-i", ms.ClientKey, "--binary", testenv.TendBinary(b)}, &out, &errb); code != 0 {
		b.Fatalf("bootstrap the full tend: %s%s", out.String(), errb.String())
	}
	m.Run(b, "systemctl restart tend-node")
	time.Sleep(5 * time.Second)
	if st := apply(); !st.InSync {
		b.Fatalf("the full tend as agent is not in sync: %+v", st)
	}
	b.ReportMetric(rss("systemctl show -p MainPID --value tend-node"), "baseline-full-tend-agent-idle-rss-MB")
}
