package fleet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"tend.dev/tend/internal/cli"
	"tend.dev/tend/internal/node"
	"tend.dev/tend/internal/rollout"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/testenv"
)

// lab is three real machines, a git server and an apt repository they
// reach on their bridge, and an ops repository with one MachinePool.
type lab struct {
	t        *testing.T
	ms       *testenv.Machines
	git      *testenv.GitServer
	wt       *testenv.WorkTree
	bin      string
	aptLine  string
	ageKey   string
	repoURL  string
	poolFile string
	head     string
	// machineState is YAML under a machine's own state (6 spaces in).
	machineState map[string]string
}

func newLab(t *testing.T, debs ...testenv.Deb) *lab {
	bin := testenv.NodeBinary(t)
	ms := testenv.NewMachines(t, 3)
	l := &lab{t: t, ms: ms, bin: bin, machineState: map[string]string{}}
	l.git = testenv.NewGitServerOn(t, ms.Gateway, "machines", "read-only-token")
	l.git.SetReadOnly(true)
	l.wt = l.git.Repo(t, "ops")
	l.repoURL = l.git.URL + "/ops.git"
	l.aptLine = ms.AptRepo(t, append([]testenv.Deb{
		{Name: "tend-hello", Version: "1.0", Files: map[string]string{"usr/share/tend-hello/VERSION": "1.0\n"}},
		{Name: "tend-hello", Version: "1.1", Files: map[string]string{"usr/share/tend-hello/VERSION": "1.1\n"}},
		{Name: "tend-extra", Version: "2.0", Files: map[string]string{"usr/share/tend-extra/README": "extra\n"}},
	}, debs...))
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	l.ageKey = filepath.Join(t.TempDir(), "machines.agekey")
	os.WriteFile(l.ageKey, []byte(id.String()+"\n"), 0o600)
	rule, err := secret.AgeRule(id.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	enc, err := secret.Encrypt("files/db-password.txt", []byte("s3cr3t-db-password\n"), rule)
	if err != nil {
		t.Fatal(err)
	}
	l.wt.Write(t, map[string]string{"files/db-password.txt": string(enc)})
	l.poolFile = filepath.Join(l.wt.Dir, "machines/web.yaml")
	t.Setenv("TEND_GIT_USERNAME", "machines")
	t.Setenv("TEND_GIT_PASSWORD", "read-only-token")
	return l
}

// pool writes the MachinePool with extra YAML under spec.state and spec.
func (l *lab) pool(state, spec string, machines ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: tend.dev/v1alpha1
kind: MachinePool
metadata: {name: web}
spec:
  interval: 2s
%s  machines:
`, spec)
	for _, m := range l.ms.List {
		fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    hostKey: %s\n    vars: {role: web}\n", m.Name, m.IP, m.HostKey)
		if st := l.machineState[m.Name]; st != "" {
			b.WriteString("    state:\n" + st)
		}
	}
	for _, m := range machines {
		b.WriteString(m)
	}
	fmt.Fprintf(&b, `  state:
    files:
    - path: /etc/apt/sources.list.d/tend-test.list
      content: %q
%s`, l.aptLine, state)
	return b.String()
}

func (l *lab) commit(msg, pool string) {
	l.t.Helper()
	l.wt.Write(l.t, map[string]string{"machines/web.yaml": pool})
	l.head = l.wt.Commit(l.t, msg)
}

func (l *lab) tend(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := cli.Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func (l *lab) bootstrap(extra ...string) (int, string, string) {
	args := append([]string{"bootstrap", "machines", "--pool", l.poolFile, "--repo", l.repoURL, "-i", l.ms.ClientKey,
		"--binary", l.bin, "--age-identity", l.ageKey}, extra...)
	return l.tend(args...)
}

type fleetStatus struct {
	Machines []struct {
		Machine string       `json:"machine"`
		Status  *node.Status `json:"status"`
		Error   string       `json:"error"`
	} `json:"machines"`
	Slots []rollout.Holder `json:"slots"`
}

func (l *lab) status() fleetStatus {
	l.t.Helper()
	code, out, errOut := l.tend("machines", "status", "--pool", l.poolFile, "-i", l.ms.ClientKey, "-o", "json")
	var fs fleetStatus
	if err := json.Unmarshal([]byte(out), &fs); err != nil || code == 2 {
		l.t.Fatalf("machines status = %d: %v\n%s%s", code, err, out, errOut)
	}
	return fs
}

// waitRevision waits until every machine (of names, or all) ran the
// current commit and cond holds for its status.
func (l *lab) wait(what string, timeout time.Duration, cond func(m string, st *node.Status) bool, names ...string) fleetStatus {
	l.t.Helper()
	head := l.head
	var fs fleetStatus
	deadline := time.Now().Add(timeout)
	for {
		fs = l.status()
		ok := len(fs.Machines) > 0
		for _, m := range fs.Machines {
			if len(names) > 0 && !contains(names, m.Machine) {
				continue
			}
			if m.Status == nil || !strings.Contains(m.Status.Revision, strings.TrimSpace(head)) || !cond(m.Machine, m.Status) {
				ok = false
			}
		}
		if ok {
			return fs
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(fs, "", "  ")
			l.t.Fatalf("timed out waiting for %s:\n%s", what, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func inSync(string, *node.Status) bool { return true }

func synced(_ string, st *node.Status) bool { return st.InSync }

const baseState = `    - path: /etc/motd
      template: true
      content: |
        {{ .Machine.Name }} of pool {{ .Machine.Pool }}, role {{ .Vars.role }}
        os {{ .Facts.OS }} {{ .Facts.OSVersion }}
    - path: /etc/hello.conf
      content: "greeting=hello\n"
    - path: /etc/app/db-password
      source: files/db-password.txt
      owner: app
    directories:
    - {path: /srv/app, mode: "0750", owner: app, group: app}
    symlinks:
    - {path: /srv/app/current, target: /usr/share/tend-hello}
    packages:
    - {name: tend-hello, version: "1.0"}
    groups:
    - {name: app, gid: 1500}
    users:
    - name: app
      uid: 1500
      groups: [app]
      authorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl deploy"]
    sysctls: {net.ipv4.ip_forward: "1"}
    kernelModules: [overlay]
    swap: "off"
    units:
    - name: hello.service
      files: [/etc/hello.conf]
      content: |
        [Unit]
        Description=hello
        [Service]
        ExecStart=/bin/sleep infinity
        [Install]
        WantedBy=multi-user.target
    firewall:
      ruleset: |
        table inet filter {
          chain input {
            type filter hook input priority 0; policy drop;
            iif lo accept
            ct state established,related accept
            tcp dport 22 accept
            tcp dport 8080 accept comment "marker-v1"
          }
        }
`

func TestMachines(t *testing.T) {
	l := newLab(t)
	l.commit("web pool", l.pool(baseState, ""))

	// Bootstrap over SSH, then converge.
	code, out, errOut := l.bootstrap()
	if code != 0 || !strings.Contains(out, "3 of 3 machines bootstrapped") || !strings.Contains(errOut, "binary copied") {
		t.Fatalf("bootstrap = %d\n%s\n%s", code, out, errOut)
	}
	m1 := l.ms.List[0]
	for _, f := range []string{"/etc/tend/node.yaml", "/etc/tend/git-credential", "/etc/tend/age.key", "/etc/tend/slot_key"} {
		if got := strings.TrimSpace(m1.Run(t, "stat -c %a "+f)); got != "600" {
			t.Errorf("%s has mode %s, want 600", f, got)
		}
	}
	l.wait("first converge", 3*time.Minute, synced)

	t.Run("resources", func(t *testing.T) {
		l.t = t
		for _, m := range l.ms.List {
			checks := map[string]string{
				"cat /etc/motd":                                         m.Name + " of pool web, role web\nos debian 12\n",
				"cat /usr/share/tend-hello/VERSION":                     "1.0\n",
				"stat -c '%a %U' /etc/app/db-password":                  "600 app\n",
				"cat /etc/app/db-password":                              "s3cr3t-db-password\n",
				"stat -c '%a %U:%G' /srv/app":                           "750 app:app\n",
				"readlink /srv/app/current":                             "/usr/share/tend-hello\n",
				"id -u app; id -g app":                                  "1500\n1500\n",
				"cat /home/app/.ssh/authorized_keys | cut -c1-11":       "ssh-ed25519\n",
				"cat /proc/sys/net/ipv4/ip_forward":                     "1\n",
				"cat /etc/sysctl.d/90-tend.conf | tail -1":              "net.ipv4.ip_forward = 1\n",
				"cat /etc/modules-load.d/tend.conf | tail -1":           "overlay\n",
				"systemctl is-active hello; systemctl is-enabled hello": "active\nenabled\n",
				"apt-mark showhold":                                     "tend-hello\n",
			}
			for cmd, want := range checks {
				if got := m.Run(t, cmd); got != want {
					t.Errorf("%s: %s = %q, want %q", m.Name, cmd, got, want)
				}
			}
			if got := m.Run(t, "nft list ruleset"); !strings.Contains(got, "marker-v1") || !strings.Contains(got, "policy drop") {
				t.Errorf("%s: firewall not loaded:\n%s", m.Name, got)
			}
		}
		// The secret's content appears in no status.
		_, out, _ := l.tend("machines", "status", "--pool", l.poolFile, "-i", l.ms.ClientKey, "-o", "json")
		if strings.Contains(out, "s3cr3t") {
			t.Error("a secret appeared in status")
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		l.t = t
		code, out, errOut := l.bootstrap()
		if code != 0 || strings.Contains(errOut, "copied") || strings.Contains(errOut, "written") || strings.Contains(errOut, "restarted") {
			t.Fatalf("second bootstrap changed something: %d\n%s\n%s", code, out, errOut)
		}
		// A no-op run starts no package manager.
		var st node.Status
		json.Unmarshal([]byte(m1.Run(t, "tend node apply -o json")), &st)
		if !st.InSync || len(st.Changed) != 0 || st.PackageManagerRuns != 0 {
			t.Fatalf("no-op apply: %+v", st)
		}
	})

	t.Run("hostname and swap", func(t *testing.T) {
		l.t = t
		m1.Run(t, "echo '/swapfile none swap sw 0 0' >> /etc/fstab")
		l.machineState["m1"] = "      hostname: \"{{ .Machine.Name }}-{{ .Vars.role }}\"\n"
		l.commit("m1 hostname", l.pool(baseState, ""))
		l.wait("in sync", time.Minute, synced)
		if got := m1.Run(t, "hostname; cat /etc/hostname; grep swap /etc/fstab"); got != "m1-web\nm1-web\n# swap off by tend: /swapfile none swap sw 0 0\n" {
			t.Fatalf("hostname and fstab: %q", got)
		}
		if got := l.ms.List[1].Run(t, "hostname"); got != "m2\n" {
			t.Errorf("the override reached m2: %q", got)
		}
	})

	t.Run("drift", func(t *testing.T) {
		l.t = t
		m2 := l.ms.List[1]
		m2.Run(t, "echo edited > /etc/hello.conf; dpkg -r tend-hello >/dev/null; nft flush ruleset")
		deadline := time.Now().Add(60 * time.Second)
		for {
			if m2.Run(t, "cat /etc/hello.conf") == "greeting=hello\n" && strings.Contains(m2.Run(t, "cat /usr/share/tend-hello/VERSION 2>&1 || true"), "1.0") &&
				strings.Contains(m2.Run(t, "nft list ruleset"), "marker-v1") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("drift was not corrected")
			}
			time.Sleep(500 * time.Millisecond)
		}
		// The change was reported, and the edited config restarted its unit.
		logs := m2.Run(t, "journalctl -u tend-node --no-pager -o cat | grep changed || true")
		for _, want := range []string{"resource=\"file /etc/hello.conf\"", "resource=\"package tend-hello\"", "resource=\"unit hello.service\""} {
			if !strings.Contains(logs, want) {
				t.Errorf("agent log lacks %s:\n%s", want, logs)
			}
		}
		// ...and counted, in the metrics node_exporter picks up.
		if got := m2.Run(t, "cat /var/lib/tend/node/metrics.prom"); !strings.Contains(got, `tend_node_in_sync{machine="m2",pool="web"} 1`) ||
			!strings.Contains(got, `tend_node_changes_total{action="update",machine="m2",pool="web"}`) {
			t.Errorf("metrics.prom:\n%s", got)
		}
		m2.Run(t, "mkdir -p /var/lib/prometheus/node-exporter")
		deadline = time.Now().Add(30 * time.Second)
		for {
			got, _ := m2.Exec("cat /var/lib/prometheus/node-exporter/tend.prom")
			if strings.Contains(got, "tend_node_revision_info{machine=\"m2\",pool=\"web\",revision=\"main@sha1:"+strings.TrimSpace(l.head)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no textfile for node_exporter:\n%s", got)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("what left git is pruned", func(t *testing.T) {
		l.t = t
		pruned := strings.Replace(baseState, "    - path: /etc/hello.conf\n      content: \"greeting=hello\\n\"\n", "", 1)
		pruned = strings.Replace(pruned, "    directories:\n    - {path: /srv/app, mode: \"0750\", owner: app, group: app}\n", "", 1)
		pruned = strings.Replace(pruned, "    symlinks:\n    - {path: /srv/app/current, target: /usr/share/tend-hello}\n", "", 1)
		pruned = pruned[:strings.Index(pruned, "    units:\n")] + pruned[strings.Index(pruned, "    firewall:\n"):]
		if pruned == baseState || strings.Contains(pruned, "hello.service") || strings.Contains(pruned, "/srv/app") || strings.Contains(pruned, "/etc/hello.conf") {
			t.Fatalf("the pruned state still has what should go:\n%s", pruned)
		}
		l.commit("drop hello", l.pool(pruned, ""))
		deadline := time.Now().Add(time.Minute)
		const check = "test -e /etc/hello.conf && echo file; test -e /srv/app && echo dir; test -e /etc/systemd/system/hello.service && echo unit; " +
			"systemctl is-active hello >/dev/null && echo running; dpkg -s tend-hello >/dev/null 2>&1 || echo package-gone; id app >/dev/null || echo user-gone; true"
		for _, m := range l.ms.List {
			for {
				got := m.Run(t, check)
				if got == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s still has: %s", m.Name, got)
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
		fs := l.wait("in sync", time.Minute, synced)
		for _, m := range fs.Machines {
			if m.Status.Resources == 0 {
				t.Errorf("%s: %+v", m.Machine, m.Status)
			}
		}
		logs := l.ms.List[0].Run(t, "journalctl -u tend-node --no-pager -o cat | grep 'action=delete' || true")
		for _, want := range []string{"resource=\"file /etc/hello.conf\"", "resource=\"unit hello.service\"", "resource=\"symlink /srv/app/current\"", "resource=\"directory /srv/app\""} {
			if !strings.Contains(logs, want) {
				t.Errorf("agent log lacks the removal of %s:\n%s", want, logs)
			}
		}
	})
}

func failing(st *node.Status, resource string) string {
	for _, f := range st.Failing {
		if f.Resource == resource {
			return f.Error + " | hint: " + f.Hint
		}
	}
	return ""
}

// slotsOn reads the coordinator's slot file.
func (l *lab) slotsOn() rollout.Slots {
	var s rollout.Slots
	out, _ := l.ms.List[0].Exec("cat /var/lib/tend-slots/web.json 2>/dev/null")
	json.Unmarshal([]byte(out), &s)
	return s
}

// convergedLab is a lab whose three machines are bootstrapped with the
// base state and have converged.
func convergedLab(t *testing.T) *lab {
	l := newLab(t)
	l.commit("web pool", l.pool(baseState, ""))
	if code, out, errOut := l.bootstrap(); code != 0 {
		t.Fatalf("bootstrap = %d\n%s\n%s", code, out, errOut)
	}
	l.wait("first converge", 3*time.Minute, synced)
	return l
}

func TestMachineFaults(t *testing.T) {
	l := convergedLab(t)
	m1, m3 := l.ms.List[0], l.ms.List[2]

	t.Run("host key mismatch", func(t *testing.T) {
		l.t = t
		bad := strings.Replace(l.pool(baseState, ""), l.ms.List[1].HostKey, m1.HostKey, 1)
		f := filepath.Join(t.TempDir(), "web.yaml")
		os.WriteFile(f, []byte(bad), 0o644)
		code, out, errOut := l.tend("bootstrap", "machines", "--pool", f, "--repo", l.repoURL, "-i", l.ms.ClientKey, "--binary", l.bin, "--age-identity", l.ageKey)
		if code != 2 || !strings.Contains(errOut, "machine m2 ("+l.ms.List[1].Addr()+"): host key mismatch") || !strings.Contains(errOut, "hint:") ||
			!strings.Contains(out, "2 of 3 machines bootstrapped") {
			t.Fatalf("bootstrap with a wrong host key = %d\n%s\n%s", code, out, errOut)
		}
	})

	t.Run("git credential that can push", func(t *testing.T) {
		l.t = t
		l.git.SetReadOnly(false)
		defer l.git.SetReadOnly(true)
		code, out, errOut := l.bootstrap()
		if code != 2 || !strings.Contains(errOut, "the git credential for the machines can push to "+l.repoURL+"; machines must only read") ||
			!strings.Contains(errOut, "hint: give the machines a read-only deploy token") || strings.Contains(out, "bootstrapped") {
			t.Fatalf("bootstrap with a writable credential = %d\n%s\n%s", code, out, errOut)
		}
		t.Logf("bootstrap with a writable credential:\n%s", errOut)
		if code, out, errOut := l.bootstrap("--allow-writable-credential"); code != 0 {
			t.Fatalf("bootstrap --allow-writable-credential = %d\n%s\n%s", code, out, errOut)
		}
	})

	t.Run("unreachable machine", func(t *testing.T) {
		l.t = t
		gone := fmt.Sprintf("  - name: m9\n    address: %s\n    hostKey: %s\n", strings.TrimSuffix(l.ms.Gateway, ".1")+".99", m1.HostKey)
		f := filepath.Join(t.TempDir(), "web.yaml")
		os.WriteFile(f, []byte(l.pool(baseState, "", gone)), 0o644)
		code, out, errOut := l.tend("machines", "status", "--pool", f, "-i", l.ms.ClientKey, "--timeout", "20s")
		if code != 1 || !strings.Contains(out, "m9") || !strings.Contains(out, "unreachable") || strings.Count(out, "in sync") != 3 || !strings.Contains(errOut, "m9: machine m9: connect") {
			t.Fatalf("status with an unreachable machine = %d\n%s\n%s", code, out, errOut)
		}
		t.Logf("tend machines status:\n%s%s", out, errOut)
	})

	t.Run("package that does not exist", func(t *testing.T) {
		l.t = t
		l.commit("bad package", l.pool(strings.Replace(baseState, "    packages:\n", "    packages:\n    - {name: no-such-package}\n", 1), ""))
		fs := l.wait("the bad package reported", time.Minute, func(_ string, st *node.Status) bool {
			return strings.Contains(failing(st, "package no-such-package"), "Unable to locate package") && len(st.Failing) == 1
		})
		t.Logf("status: %s", failing(fs.Machines[0].Status, "package no-such-package"))
		l.commit("good again", l.pool(baseState, ""))
		l.wait("in sync", time.Minute, synced)
	})

	t.Run("kernel module that does not exist", func(t *testing.T) {
		l.t = t
		l.commit("bad module", l.pool(strings.Replace(baseState, "kernelModules: [overlay]", "kernelModules: [overlay, tend_no_such_module]", 1), ""))
		fs := l.wait("the bad module reported", time.Minute, func(_ string, st *node.Status) bool {
			f := failing(st, "kernel-modules /etc/modules-load.d/tend.conf")
			return strings.Contains(f, "load module tend_no_such_module") && strings.Contains(f, "modinfo tend_no_such_module") && len(st.Failing) == 1
		})
		// modprobe really ran, and said why.
		t.Logf("status: %s", failing(fs.Machines[0].Status, "kernel-modules /etc/modules-load.d/tend.conf"))
		l.commit("good again", l.pool(baseState, ""))
		l.wait("in sync", time.Minute, synced)
	})

	t.Run("nftables syntax error", func(t *testing.T) {
		l.t = t
		l.commit("bad ruleset", l.pool(strings.Replace(baseState, `tcp dport 8080 accept comment "marker-v1"`, `tcp dport 8080 acept`, 1), ""))
		l.wait("the bad ruleset refused in plan", time.Minute, func(_ string, st *node.Status) bool {
			return strings.Contains(failing(st, "firewall /etc/nftables.conf"), "nftables rejects the ruleset")
		})
		for _, m := range l.ms.List {
			if !strings.Contains(m.Run(t, "nft list ruleset"), "marker-v1") {
				t.Errorf("%s: the live ruleset was touched", m.Name)
			}
		}
		if s := l.slotsOn(); len(s.Holders) != 0 {
			t.Errorf("a refused ruleset took a slot: %+v", s)
		}
	})

	t.Run("ruleset cutting off SSH", func(t *testing.T) {
		l.t = t
		l.commit("no ssh", l.pool(strings.Replace(baseState, "tcp dport 22 accept", "", 1), ""))
		l.wait("the ruleset refused", time.Minute, func(_ string, st *node.Status) bool {
			return strings.Contains(failing(st, "firewall /etc/nftables.conf"), "would cut off SSH")
		})
		if _, err := m1.Exec("true"); err != nil {
			t.Fatalf("SSH was cut off: %v", err)
		}
		l.commit("good again", l.pool(baseState, ""))
		l.wait("in sync", time.Minute, synced)
	})

	t.Run("ruleset keeping SSH through a jump and a set", func(t *testing.T) {
		l.t = t
		fw := func(admins string) string {
			return baseState[:strings.Index(baseState, "    firewall:\n")] + fmt.Sprintf(`    firewall:
      sshFrom: [%s]
      ruleset: |
        table inet filter {
          set admins { type ipv4_addr; flags interval; elements = { %s } }
          chain ssh_in {
            iifname "host0" ip saddr @admins tcp dport 22 accept
          }
          chain input {
            type filter hook input priority 0; policy drop;
            iif lo accept
            ct state vmap { established : accept, related : accept, invalid : drop }
            jump ssh_in
            tcp dport 8080 accept comment "marker-v2"
          }
        }
`, l.ms.Gateway, admins)
		}
		subnet := strings.TrimSuffix(l.ms.Gateway, ".1") + ".0/24"
		l.commit("admins only", l.pool(fw(subnet), ""))
		l.wait("the ruleset applied", 2*time.Minute, synced)
		for _, m := range l.ms.List {
			if !strings.Contains(m.Run(t, "nft list ruleset"), "marker-v2") {
				t.Errorf("%s: the ruleset was not applied", m.Name)
			}
		}
		// Admins on another network: the pool's machines could no longer
		// reach the coordinator, so it is refused, naming who is cut off.
		l.commit("wrong admins", l.pool(fw("10.99.0.0/16, "+l.ms.Gateway), ""))
		fs := l.wait("the ruleset refused", time.Minute, func(_ string, st *node.Status) bool {
			return strings.Contains(failing(st, "firewall /etc/nftables.conf"), "would cut off SSH from "+strings.TrimSuffix(l.ms.Gateway, ".1"))
		})
		t.Logf("m1: %s", failing(fs.Machines[0].Status, "firewall /etc/nftables.conf"))
		for _, m := range l.ms.List {
			if !strings.Contains(m.Run(t, "nft list ruleset"), "marker-v2") {
				t.Errorf("%s: the live ruleset was touched", m.Name)
			}
		}
		l.commit("good again", l.pool(baseState, ""))
		l.wait("in sync", 2*time.Minute, synced)
	})

	t.Run("unit that fails to start", func(t *testing.T) {
		l.t = t
		broken := strings.Replace(strings.Replace(baseState, "ExecStart=/bin/sleep infinity", "ExecStart=/bin/false", 1),
			"- name: hello.service\n", "- name: hello.service\n      disruptive: true\n", 1)
		l.commit("broken unit", l.pool(broken, "  rollout: {maxUnavailable: 1}\n"))
		deadline := time.Now().Add(time.Minute)
		var holder string
		for holder == "" {
			s := l.slotsOn()
			if len(s.Holders) == 1 && strings.Contains(s.Holders[0].Reason, "apply failed: unit hello.service") {
				holder = s.Holders[0].Machine
			}
			if time.Now().After(deadline) {
				t.Fatalf("no machine holds the slot after the failed restart: %+v", s)
			}
			time.Sleep(300 * time.Millisecond)
		}
		fs := l.wait("the failure reported", time.Minute, func(m string, st *node.Status) bool {
			if m == holder {
				return strings.Contains(failing(st, "unit hello.service"), "previous unit file was restored")
			}
			return len(st.Pending) > 0 && strings.Contains(st.Slot, "waiting")
		})
		for _, m := range l.ms.List {
			if m.Name == holder {
				if got := m.Run(t, "grep ExecStart /etc/systemd/system/hello.service; systemctl is-active hello"); got != "ExecStart=/bin/sleep infinity\nactive\n" {
					t.Errorf("%s: the previous unit was not restored: %q", m.Name, got)
				}
			} else if got := m.Run(t, "grep ExecStart /etc/systemd/system/hello.service"); got != "ExecStart=/bin/sleep infinity\n" {
				t.Errorf("%s changed its unit while another machine held the slot", m.Name)
			}
		}
		for _, m := range fs.Machines {
			if m.Machine == holder {
				t.Logf("%s: %s", m.Machine, failing(m.Status, "unit hello.service"))
			}
		}
		// Back to a working unit: the holder heals, frees its slot, all converge.
		l.commit("unit fixed", l.pool(baseState, ""))
		l.wait("in sync", time.Minute, synced)
		if s := l.slotsOn(); len(s.Holders) != 0 {
			t.Errorf("slot still held: %+v", s)
		}
	})

	t.Run("agent killed mid-apply", func(t *testing.T) {
		l.t = t
		m3.Run(t, "systemctl stop tend-node")
		l.commit("extra package", l.pool(strings.Replace(baseState, "    packages:\n", "    packages:\n    - {name: tend-extra}\n", 1), ""))
		// Kill a run while apt works, then run again.
		m3.Run(t, "(tend node apply >/dev/null 2>&1 & echo $! > /tmp/apply.pid); sleep 0.7; kill -KILL $(cat /tmp/apply.pid); pkill -KILL -x apt-get; pkill -KILL -x dpkg; pkill -KILL -x http; true")
		var st node.Status
		out, _ := m3.Exec("tend node apply -o json")
		json.Unmarshal([]byte(out), &st)
		if !st.InSync || m3.Run(t, "cat /usr/share/tend-extra/README") != "extra\n" {
			t.Fatalf("the run after the kill did not converge:\n%s", out)
		}
		m3.Run(t, "systemctl start tend-node")
		l.wait("in sync", time.Minute, synced)
	})

	t.Run("full disk", func(t *testing.T) {
		l.t = t
		m3.Run(t, "mkdir -p /srv/small && mount -t tmpfs -o size=16k tmpfs /srv/small")
		l.machineState["m3"] = "      files:\n      - {path: /srv/small/data, content: \"old content\\n\"}\n"
		l.commit("small file", l.pool(baseState, ""))
		l.wait("in sync", time.Minute, synced)
		l.machineState["m3"] = fmt.Sprintf("      files:\n      - {path: /srv/small/data, content: %q}\n", strings.Repeat("x", 64<<10))
		l.commit("big file", l.pool(baseState, ""))
		l.wait("the full disk reported", time.Minute, func(m string, st *node.Status) bool {
			return m != "m3" || strings.Contains(failing(st, "file /srv/small/data"), "no space left")
		})
		if got := m3.Run(t, "cat /srv/small/data; ls -A /srv/small"); got != "old content\ndata\n" {
			t.Fatalf("the old file was not kept whole: %q", got)
		}
		delete(l.machineState, "m3")
		l.commit("no small file", l.pool(baseState, ""))
		l.wait("in sync", time.Minute, synced)
	})

	t.Run("rollout bound", func(t *testing.T) {
		l.t = t
		// A disruptive change on all three, maxUnavailable 1, a health check
		// that takes a while: never two machines at once.
		changed := strings.Replace(strings.Replace(baseState, "ExecStart=/bin/sleep infinity", "ExecStart=/bin/sleep 100000", 1),
			"- name: hello.service\n", "- name: hello.service\n      disruptive: true\n", 1)
		l.commit("roll", l.pool(changed, "  rollout:\n    maxUnavailable: 1\n    health: [{command: \"sleep 2 && systemctl is-active hello\"}]\n"))
		l.wait("rolled out", 2*time.Minute, func(m string, st *node.Status) bool {
			return st.InSync && st.Slot == ""
		})
		// The coordinator's history is the proof: replay it.
		hist := m1.Run(t, "cat /var/lib/tend-slots/web.history")
		in, most, seen := map[string]bool{}, 0, map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(hist), "\n") {
			f := strings.Fields(line)
			switch f[1] {
			case "acquire":
				in[f[2]], seen[f[2]] = true, true
			case "release":
				delete(in, f[2])
			}
			most = max(most, len(in))
		}
		if most != 1 || len(seen) != 3 {
			t.Fatalf("at most %d machines held a slot at once (want 1); holders: %v\n%s", most, seen, hist)
		}
		for _, m := range l.ms.List {
			if !strings.Contains(m.Run(t, "grep ExecStart /etc/systemd/system/hello.service"), "100000") {
				t.Errorf("%s was not rolled", m.Name)
			}
		}
		t.Logf("slot history:\n%s", hist)
		l.wait("in sync", time.Minute, synced)
	})

	t.Run("failed health keeps the slot", func(t *testing.T) {
		l.t = t
		changed := strings.Replace(baseState, "- name: hello.service\n", "- name: hello.service\n      disruptive: true\n", 1)
		l.commit("roll with failing health", l.pool(changed, "  rollout:\n    maxUnavailable: 1\n    healthTimeout: 3s\n    health: [{command: \"test -e /etc/healthy\"}]\n"))
		var holder string
		deadline := time.Now().Add(2 * time.Minute)
		for holder == "" {
			if s := l.slotsOn(); len(s.Holders) == 1 && strings.Contains(s.Holders[0].Reason, "health check failed") {
				holder = s.Holders[0].Machine
			}
			if time.Now().After(deadline) {
				t.Fatalf("no machine stuck on its health check: %+v", l.slotsOn())
			}
			time.Sleep(300 * time.Millisecond)
		}
		l.wait("the others waiting", time.Minute, func(m string, st *node.Status) bool {
			return m == holder || strings.Contains(st.Slot, "waiting")
		})
		code, out, _ := l.tend("machines", "status", "--pool", l.poolFile, "-i", l.ms.ClientKey)
		if code != 1 || !strings.Contains(out, "held: health check failed") || strings.Count(out, "pending") != 2 {
			t.Fatalf("status does not show the stuck rollout: %d\n%s", code, out)
		}
		t.Logf("tend machines status (%s stuck):\n%s", holder, out)
		for _, m := range l.ms.List {
			m.Run(t, "touch /etc/healthy")
		}
		l.wait("the rollout resumed and finished", 2*time.Minute, synced)
		if s := l.slotsOn(); len(s.Holders) != 0 {
			t.Errorf("slot still held: %+v", s)
		}
	})
}

// TestMachinesDiffAndReboot covers tend machines diff, and changes that
// need a reboot: reported until the machine boots while the pool forbids
// reboots, then rolled as reboots one machine at a time once it allows
// them. The machines' roots persist across reboots, as disks do.
func TestMachinesDiffAndReboot(t *testing.T) {
	l := convergedLab(t)
	m1 := l.ms.List[0]

	t.Run("machines diff", func(t *testing.T) {
		l.t = t
		code, out, errOut := l.tend("machines", "diff", "--pool", l.poolFile, "-i", l.ms.ClientKey)
		if code != 0 || strings.Count(out, "in sync at") != 3 {
			t.Fatalf("diff of converged machines = %d\n%s%s", code, out, errOut)
		}
		// With the agents stopped, a new commit is only a diff.
		for _, m := range l.ms.List {
			m.Run(t, "systemctl stop tend-node")
		}
		l.machineState["m2"] = "      files:\n      - {path: /etc/hello.conf, content: \"greeting=hi m2\\n\"}\n"
		l.commit("m2 says hi", l.pool(baseState, ""))
		code, out, errOut = l.tend("machines", "diff", "--pool", l.poolFile, "-i", l.ms.ClientKey)
		if code != 1 || strings.Count(out, "in sync at") != 2 || !strings.Contains(out, "m2: 2 to change") ||
			!strings.Contains(out, "update file /etc/hello.conf") || !strings.Contains(out, "+greeting=hi m2") ||
			!strings.Contains(out, "restart unit hello.service") {
			t.Fatalf("diff with a pending change = %d\n%s%s", code, out, errOut)
		}
		t.Logf("tend machines diff:\n%s", out)
		code, out, _ = l.tend("machines", "diff", "--pool", l.poolFile, "-i", l.ms.ClientKey, "-o", "json")
		var plans []struct {
			Machine  string `json:"machine"`
			Revision string `json:"revision"`
			Changes  []struct {
				Resource string `json:"resource"`
			} `json:"changes"`
		}
		if err := json.Unmarshal([]byte(out), &plans); err != nil || code != 1 || len(plans) != 3 {
			t.Fatalf("diff -o json = %d: %v\n%s", code, err, out)
		}
		for _, m := range plans {
			want := 0
			if m.Machine == "m2" {
				want = 2
			}
			if len(m.Changes) != want || !strings.Contains(m.Revision, strings.TrimSpace(l.head)) {
				t.Errorf("%s: %d changes at %s, want %d at %s", m.Machine, len(m.Changes), m.Revision, want, l.head)
			}
		}
		if got := l.ms.List[1].Run(t, "cat /etc/hello.conf"); got != "greeting=hello\n" {
			t.Errorf("diff changed the machine: %q", got)
		}
		for _, m := range l.ms.List {
			m.Run(t, "systemctl start tend-node")
		}
		l.wait("m2 applied", time.Minute, synced)
	})

	t.Run("reboot", func(t *testing.T) {
		l.t = t
		histBefore := len(strings.Split(strings.TrimSpace(m1.Run(t, "cat /var/lib/tend-slots/web.history 2>/dev/null; true")), "\n"))
		kernel := strings.Replace(baseState, `{name: tend-hello, version: "1.0"}`, `{name: tend-hello, version: "1.1", reboot: true}`, 1)
		// Reboots not allowed: the package is installed, and every run
		// says a reboot is owed, not in sync.
		l.commit("new kernel, no reboots", l.pool(kernel, "  rollout: {maxUnavailable: 1}\n"))
		l.wait("a reboot owed", 2*time.Minute, func(_ string, st *node.Status) bool {
			return st.RebootRequired && !st.InSync && len(st.Changed) == 0 && st.Slot == ""
		})
		code, out, _ := l.tend("machines", "status", "--pool", l.poolFile, "-i", l.ms.ClientKey)
		if code != 1 || strings.Count(out, "reboot required") != 3 {
			t.Fatalf("status does not show the owed reboots: %d\n%s", code, out)
		}
		t.Logf("tend machines status:\n%s", out)
		for _, m := range l.ms.List {
			if m.Boots() != 1 || m.Run(t, "cat /usr/share/tend-hello/VERSION") != "1.1\n" {
				t.Fatalf("%s: booted %d times, VERSION %q", m.Name, m.Boots(), m.Run(t, "cat /usr/share/tend-hello/VERSION"))
			}
		}
		// Reboots allowed: one machine at a time takes a slot, reboots,
		// passes its health check after the boot and frees the slot.
		l.commit("reboots allowed", l.pool(kernel, "  rollout:\n    maxUnavailable: 1\n    reboot: true\n    health: [{command: \"systemctl is-active hello\"}]\n"))
		deadline := time.Now().Add(4 * time.Minute)
		for {
			done := 0
			for _, m := range l.ms.List {
				if m.Boots() == 2 {
					done++
				}
			}
			if done == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of 3 machines rebooted", done)
			}
			time.Sleep(time.Second)
		}
		l.wait("all back and in sync", 2*time.Minute, func(_ string, st *node.Status) bool {
			return st.InSync && !st.RebootRequired && st.Slot == ""
		})
		hist := strings.Split(strings.TrimSpace(m1.Run(t, "cat /var/lib/tend-slots/web.history")), "\n")[histBefore:]
		in, most, rebooted := map[string]bool{}, 0, map[string]bool{}
		for _, line := range hist {
			f := strings.Fields(line)
			switch f[1] {
			case "acquire":
				in[f[2]] = true
			case "release":
				delete(in, f[2])
			}
			if strings.Contains(line, "rebooting") {
				rebooted[f[2]] = true
			}
			most = max(most, len(in))
		}
		if most != 1 || len(rebooted) != 3 {
			t.Fatalf("at most %d machines held a slot at once (want 1); rebooted under a slot: %v\n%s", most, rebooted, strings.Join(hist, "\n"))
		}
		for _, m := range l.ms.List {
			if got := m.Run(t, "cat /usr/share/tend-hello/VERSION; systemctl is-active hello tend-node"); got != "1.1\nactive\nactive\n" {
				t.Errorf("%s after its reboot: %q", m.Name, got)
			}
		}
		t.Logf("slot history:\n%s", strings.Join(hist, "\n"))
	})
}
