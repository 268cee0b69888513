package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

func TestMachinePoolLoadAndMerge(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"machines/web.yaml": `apiVersion: tend.dev/v1alpha1
kind: MachinePool
metadata: {name: web}
spec:
  interval: 30s
  state:
    sysctls: {net.ipv4.ip_forward: "1", vm.swappiness: "10"}
    packages: [{name: nginx}, {name: curl}]
    files:
    - path: /etc/motd
      content: |
        hello {{ .Machine.Name }}
  machines:
  - name: web-1
    address: 10.0.0.1
    hostKey: ` + hostKey + `
    state:
      sysctls: {vm.swappiness: "1"}
      packages: [{name: nginx, version: "1.22.1-9"}]
  - {name: web-2, address: "10.0.0.2:2222", user: admin, hostKey: "` + hostKey + `"}
`})
	r, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.MachinePool("web")
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := p.Machine("web-1")
	st := p.StateFor(m1)
	if diff := cmp.Diff(map[string]string{"net.ipv4.ip_forward": "1", "vm.swappiness": "1"}, st.Sysctls); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]Package{{Name: "nginx", Version: "1.22.1-9"}, {Name: "curl"}}, st.Packages); diff != "" {
		t.Error(diff)
	}
	if st.Files[0].Line != 12 {
		t.Errorf("file content line = %d, want 12", st.Files[0].Line)
	}
	m2, _ := p.Machine("web-2")
	if m2.SSHAddress() != "10.0.0.2:2222" || m2.SSHUser() != "admin" || m1.SSHAddress() != "10.0.0.1:22" || m1.SSHUser() != "root" {
		t.Errorf("ssh defaults: %s %s %s %s", m1.SSHAddress(), m1.SSHUser(), m2.SSHAddress(), m2.SSHUser())
	}
	if p.Coordinator().Name != "web-1" || p.Spec.Rollout.MaxUnavailableOrDefault() != 1 {
		t.Error("rollout defaults")
	}
	if _, err := p.Machine("web-9"); err == nil || !strings.Contains(HintOf(err), "web-1, web-2") {
		t.Errorf("unknown machine: %v", err)
	}
}

func TestMachinePoolBadInput(t *testing.T) {
	head := "apiVersion: tend.dev/v1alpha1\nkind: MachinePool\nmetadata: {name: web}\nspec:\n"
	m := "  machines:\n  - {name: a, address: 10.0.0.1, hostKey: \"" + hostKey + "\"}\n"
	for _, tc := range []struct {
		name, yaml, want, hint string
	}{
		{"bad host key", head + "  machines:\n  - {name: a, address: 10.0.0.1, hostKey: nope}\n", "web.yaml:6: MachinePool/web: machine \"a\": hostKey is not an SSH public key", "ssh-keyscan"},
		{"unknown field", head + m + "  state:\n    packges: [{name: x}]\n", "web.yaml:8: unknown field \"packges\" in spec.state", "did you mean \"packages\""},
		{"relative path", head + m + "  state:\n    files: [{path: etc/x, content: y}]\n", "web.yaml:8: MachinePool/web: machine a: file path \"etc/x\" is not absolute", "full path"},
		{"content and source", head + m + "  state:\n    files: [{path: /x, content: y, source: z}]\n", "exactly one of content and source", "source:"},
		{"bad mode", head + m + "  state:\n    files: [{path: /x, content: y, mode: \"999\"}]\n", "mode \"999\" is not octal", "octal"},
		{"no machines", head + "  machines: []\n", "no machines", "spec.machines"},
		{"duplicate machine", head + m + "  - {name: a, address: 10.0.0.2, hostKey: \"" + hostKey + "\"}\n", "machine \"a\" is listed twice", "unique"},
		{"unit without suffix", head + m + "  state:\n    units: [{name: web}]\n", "unit \"web\" has no suffix", "web.service"},
		{"firewall sshFrom not an address", head + m + "  state:\n    firewall:\n      ruleset: \"table inet f {}\"\n      sshFrom: [bastion.example]\n", "web.yaml:9: MachinePool/web: machine a: firewall sshFrom \"bastion.example\" is not an IP address", "sshFrom: [192.0.2.10]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"web.yaml": tc.yaml})
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(HintOf(err), tc.hint) {
				t.Fatalf("error = %v\nhint = %s\nwant %q / %q", err, HintOf(err), tc.want, tc.hint)
			}
		})
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
