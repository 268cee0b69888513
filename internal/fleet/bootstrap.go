package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"tend.dev/tend/internal/model"
)

// Paths on a machine.
const (
	BinPath        = "/usr/local/bin/tend"
	ConfigPath     = "/etc/tend/node.yaml"
	CredentialPath = "/etc/tend/git-credential"
	AgeKeyPath     = "/etc/tend/age.key"
	SlotKeyPath    = "/etc/tend/slot_key"
	UnitPath       = "/etc/systemd/system/tend-node.service"
	SlotUser       = "tend-slots"
	SlotHome       = "/var/lib/tend-slots"
)

// unit is the node agent's systemd service.
const unit = `# Installed by tend bootstrap machines.
[Unit]
Description=tend node agent: keeps this machine as the ops repository says
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/local/bin/tend node run --config /etc/tend/node.yaml
Restart=always
RestartSec=5
# The agent manages the machine, so it runs as root; its secrets are 0600.
UMask=0077

[Install]
WantedBy=multi-user.target
`

// BootstrapOptions say what to install.
type BootstrapOptions struct {
	// Binary is the tend executable to copy (linux, static).
	Binary []byte
	// Repo and Ref are what the agents follow; Repo holds no credentials.
	Repo, Ref string
	// Credential is a read-only git credential ("user:token" or a token).
	Credential string
	// AgeIdentity decrypts the pool's secret files.
	AgeIdentity []byte
	// Progress, when set, hears about each machine as it goes.
	Progress func(machine, msg string)
}

// Result is what bootstrap did on one machine.
type Result struct {
	Machine string   `json:"machine"`
	Done    []string `json:"done,omitempty"`
	Error   string   `json:"error,omitempty"`
	Hint    string   `json:"hint,omitempty"`
	err     error
}

// Err is the machine's error, if any.
func (r Result) Err() error { return r.err }

// Bootstrap installs or upgrades the node agent on every machine of p, in
// parallel. A machine that fails does not stop the others. Running it again
// changes nothing that is right.
func Bootstrap(ctx context.Context, d *Dialer, p *model.MachinePool, o BootstrapOptions) []Result {
	results := make([]Result, len(p.Spec.Machines))
	slotKeys := make([]string, len(p.Spec.Machines))
	var wg sync.WaitGroup
	for i := range p.Spec.Machines {
		m := &p.Spec.Machines[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := Result{Machine: m.Name}
			key, err := bootstrapOne(ctx, d, p, m, o, &r)
			if err != nil {
				r.err, r.Error, r.Hint = err, err.Error(), model.HintOf(err)
			}
			slotKeys[i] = key
			results[i] = r
			if o.Progress != nil {
				o.Progress(m.Name, summarize(r))
			}
		}()
	}
	wg.Wait()
	// The coordinator accepts each machine's slot key, for the slot command only.
	coord := p.Coordinator()
	for i := range results {
		if results[i].Machine != coord.Name || results[i].err != nil {
			continue
		}
		done, err := setupCoordinator(ctx, d, p, coord, slotKeys)
		if err != nil {
			results[i].err, results[i].Error, results[i].Hint = err, "rollout coordinator: "+err.Error(), model.HintOf(err)
		}
		results[i].Done = append(results[i].Done, done...)
	}
	return results
}

func summarize(r Result) string {
	if r.err != nil {
		return "failed: " + r.Error
	}
	if len(r.Done) == 0 {
		return "up to date"
	}
	return strings.Join(r.Done, ", ")
}

// session runs commands as root on one machine.
type session struct {
	c    *ssh.Client
	sudo string
}

// rootSession connects to m and runs commands as root there (sudo -n when
// the pool's user is not root).
func (d *Dialer) rootSession(ctx context.Context, m *model.Machine) (*session, error) {
	c, err := d.Dial(ctx, m)
	if err != nil {
		return nil, err
	}
	s := &session{c: c}
	if m.SSHUser() != "root" {
		s.sudo = "sudo -n "
	}
	return s, nil
}

func (s *session) Close() error { return s.c.Close() }

func (s *session) run(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
	if stdin == nil {
		return Run(ctx, s.c, s.sudo+"sh -c "+shellQuote(cmd), nil)
	}
	return Run(ctx, s.c, s.sudo+"sh -c "+shellQuote(cmd), bytes.NewReader(stdin))
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// hashes returns the sha256 of each path that exists.
func (s *session) hashes(ctx context.Context, paths ...string) (map[string]string, error) {
	out, err := s.run(ctx, "sha256sum "+strings.Join(paths, " ")+" 2>/dev/null; true", nil)
	if err != nil {
		return nil, err
	}
	h := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			h[f[1]] = f[0]
		}
	}
	return h, nil
}

// put writes content to path atomically with mode, unless it is there already.
func (s *session) put(ctx context.Context, have map[string]string, path string, mode string, content []byte) (bool, error) {
	if have[path] == sum(content) {
		return false, nil
	}
	tmp := path + ".tend-new"
	dir := path[:strings.LastIndex(path, "/")]
	cmd := fmt.Sprintf("umask 077 && mkdir -p %s && cat > %s && chmod %s %s && mv -f %s %s", dir, tmp, mode, tmp, tmp, path)
	if _, err := s.run(ctx, cmd, content); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}

// NodeConfig is the agent config bootstrap writes.
func NodeConfig(p *model.MachinePool, m *model.Machine, o BootstrapOptions) []byte {
	cfg := map[string]string{"repo": o.Repo, "pool": p.Metadata.Name, "machine": m.Name, "slotKeyFile": SlotKeyPath}
	if o.Ref != "" {
		cfg["ref"] = o.Ref
	}
	if o.Credential != "" {
		cfg["credentialFile"] = CredentialPath
	}
	if len(o.AgeIdentity) > 0 {
		cfg["ageIdentityFile"] = AgeKeyPath
	}
	b, _ := yaml.Marshal(cfg)
	return append([]byte("# Written by tend bootstrap machines.\n"), b...)
}

func bootstrapOne(ctx context.Context, d *Dialer, p *model.MachinePool, m *model.Machine, o BootstrapOptions, r *Result) (string, error) {
	s, err := d.rootSession(ctx, m)
	if err != nil {
		return "", err
	}
	defer s.Close()
	if out, err := s.run(ctx, "id -u", nil); err != nil || strings.TrimSpace(string(out)) != "0" {
		return "", model.WithHint(fmt.Errorf("machine %s: cannot run commands as root: %v", m.Name, err), "connect as root, or give the user passwordless sudo")
	}
	have, err := s.hashes(ctx, BinPath, ConfigPath, CredentialPath, AgeKeyPath, UnitPath)
	if err != nil {
		return "", err
	}
	changed := false
	if have[BinPath] != sum(o.Binary) {
		verb := "binary copied"
		if have[BinPath] != "" {
			verb = "binary upgraded"
		}
		if o.Progress != nil {
			o.Progress(m.Name, fmt.Sprintf("copying tend (%.1f MB)", float64(len(o.Binary))/1e6))
		}
		if _, err := s.put(ctx, have, BinPath, "0755", o.Binary); err != nil {
			return "", err
		}
		r.Done, changed = append(r.Done, verb), true
	}
	files := []struct {
		path, mode, what string
		content          []byte
	}{
		{ConfigPath, "0600", "config", NodeConfig(p, m, o)},
		{UnitPath, "0644", "service unit", []byte(unit)},
	}
	if o.Credential != "" {
		files = append(files, struct {
			path, mode, what string
			content          []byte
		}{CredentialPath, "0600", "git credential", []byte(o.Credential + "\n")})
	}
	if len(o.AgeIdentity) > 0 {
		files = append(files, struct {
			path, mode, what string
			content          []byte
		}{AgeKeyPath, "0600", "age identity", o.AgeIdentity})
	}
	for _, f := range files {
		w, err := s.put(ctx, have, f.path, f.mode, f.content)
		if err != nil {
			return "", err
		}
		if w {
			r.Done, changed = append(r.Done, f.what+" written"), true
		}
	}
	key, err := s.run(ctx, BinPath+" node slot-key --file "+SlotKeyPath, nil)
	if err != nil {
		return "", fmt.Errorf("slot key: %w", err)
	}
	if changed {
		if _, err := s.run(ctx, "systemctl daemon-reload && systemctl enable -q tend-node.service && systemctl restart tend-node.service", nil); err != nil {
			return "", model.WithHint(fmt.Errorf("start tend-node: %w", err), "see journalctl -u tend-node on the machine")
		}
		r.Done = append(r.Done, "agent restarted")
	} else if _, err := s.run(ctx, "systemctl is-active -q tend-node.service || systemctl start tend-node.service", nil); err != nil {
		return "", fmt.Errorf("start tend-node: %w", err)
	}
	return strings.TrimSpace(string(key)), nil
}

// setupCoordinator creates the slot user and lets each machine's key run
// only `tend node slots` for itself.
func setupCoordinator(ctx context.Context, d *Dialer, p *model.MachinePool, coord *model.Machine, keys []string) ([]string, error) {
	s, err := d.rootSession(ctx, coord)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ak := SlotHome + "/.ssh/authorized_keys"
	// A machine this run could not reach keeps the key it had.
	prev, _ := s.run(ctx, "cat "+ak+" 2>/dev/null; true", nil)
	var lines []string
	for i, k := range keys {
		m := p.Spec.Machines[i]
		if m.Name == coord.Name {
			continue
		}
		if k == "" {
			if l := slotLineFor(string(prev), p.Metadata.Name, m.Name); l != "" {
				lines = append(lines, l)
			}
			continue
		}
		lines = append(lines, fmt.Sprintf(`command="%s node slots --pool %s --holder %s",restrict %s`, BinPath, p.Metadata.Name, m.Name, k))
	}
	sort.Strings(lines)
	content := []byte("# Written by tend bootstrap machines: each key may only take rollout slots for its machine.\n" + strings.Join(lines, "\n") + "\n")
	if _, err := s.run(ctx, fmt.Sprintf("id -u %[1]s >/dev/null 2>&1 || useradd --system --home-dir %[2]s --create-home --shell /bin/sh %[1]s; usermod -p '*' %[1]s; "+
		"install -d -m 0700 -o %[1]s -g %[1]s %[2]s %[2]s/.ssh", SlotUser, SlotHome), nil); err != nil {
		return nil, fmt.Errorf("create %s: %w", SlotUser, err)
	}
	have, err := s.hashes(ctx, ak)
	if err != nil {
		return nil, err
	}
	w, err := s.put(ctx, have, ak, "0600", content)
	if err != nil {
		return nil, err
	}
	if _, err := s.run(ctx, fmt.Sprintf("chown %[1]s:%[1]s %[2]s", SlotUser, ak), nil); err != nil {
		return nil, err
	}
	if w {
		return []string{"slot keys authorized"}, nil
	}
	return nil, nil
}

// AgentName is the machine build of tend (cmd/tend-node), which release
// archives and hack/quickstart.sh put beside tend.
const AgentName = "tend-node"

// AgentBinary reads the executable to install on machines: path when given;
// else tend-node beside exe, the running tend; else exe itself. The full
// tend works as an agent too, but links Kubernetes, Helm and every cloud
// KMS client: warn says what that costs and how to avoid it.
func AgentBinary(path, exe string) (bin []byte, from, warn string, err error) {
	if path == "" {
		path = filepath.Join(filepath.Dir(exe), AgentName)
		if _, err := os.Stat(path); err != nil {
			path = exe
			warn = fmt.Sprintf("no %s beside %s: installing the full tend as the agent, which idles at about 60 MB resident instead of 16 MB; "+
				"build the machine agent with `CGO_ENABLED=0 go build -o %s ./cmd/tend-node` or pass --binary", AgentName, exe, filepath.Join(filepath.Dir(exe), AgentName))
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, path, "", model.WithHint(fmt.Errorf("read the agent binary: %w", err),
			"pass --binary with a linux build of the agent (CGO_ENABLED=0 go build -o tend-node ./cmd/tend-node)")
	}
	if len(b) < 4 || string(b[:4]) != "\x7fELF" {
		return nil, path, "", model.WithHint(fmt.Errorf("read the agent binary: %s is not a Linux executable", path),
			"pass --binary with a linux build of the agent (GOOS=linux CGO_ENABLED=0 go build -o tend-node ./cmd/tend-node)")
	}
	return b, path, warn, nil
}

// slotLineFor finds machine's line in an existing slot authorized_keys. Pure.
func slotLineFor(authorizedKeys, pool, machine string) string {
	want := fmt.Sprintf(" node slots --pool %s --holder %s\"", pool, machine)
	for _, l := range strings.Split(authorizedKeys, "\n") {
		if strings.Contains(l, want) {
			return l
		}
	}
	return ""
}
