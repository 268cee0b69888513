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
}

func newLab(t *testing.T) *lab {
	bin := testenv.TendBinary(t)
	ms := testenv.NewMachines(t, 3)
	l := &lab{t: t, ms: ms, bin: bin}
	l.git = testenv.NewGitServerOn(t, ms.Gateway, "machines", "read-only-token")
	l.wt = l.git.Repo(t, "ops")
	l.repoURL = l.git.URL + "/ops.git"
	l.aptLine = ms.AptRepo(t, []testenv.Deb{
		{Name: "tend-hello", Version: "1.0", Files: map[string]string{"usr/share/tend-hello/VERSION": "1.0\n"}},
		{Name: "tend-hello", Version: "1.1", Files: map[string]string{"usr/share/tend-hello/VERSION": "1.1\n"}},
		{Name: "tend-extra", Version: "2.0", Files: map[string]string{"usr/share/tend-extra/README": "extra\n"}},
	})
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
	_, out, _ := l.tend("machines", "status", "--pool", l.poolFile, "-i", l.ms.ClientKey, "-o", "json")
	var fs fleetStatus
	json.Unmarshal([]byte(out), &fs)
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

	t.Run("drift", func(t *testing.T) {
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
	})
}
