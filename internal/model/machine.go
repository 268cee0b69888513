package model

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// KindMachinePool is a set of machines kept in one desired state.
const KindMachinePool = "MachinePool"

// MachinePool is a set of machines under the cluster, each kept by its own
// node agent (`tend node`) in the state this file describes.
type MachinePool struct {
	APIVersion string          `json:"apiVersion" yaml:"apiVersion" jsonschema:"required,enum=tend.dev/v1alpha1"`
	Kind       string          `json:"kind" yaml:"kind" jsonschema:"required,enum=MachinePool"`
	Metadata   ObjectMeta      `json:"metadata" yaml:"metadata" jsonschema:"required"`
	Spec       MachinePoolSpec `json:"spec" yaml:"spec" jsonschema:"required"`

	Origin Origin `json:"-" yaml:"-"`
}

// MachinePoolSpec is the desired state of every machine in the pool.
type MachinePoolSpec struct {
	// Interval is how often each node agent fetches the repository and
	// corrects drift (default 1m).
	Interval Duration `json:"interval,omitempty" yaml:"interval,omitempty"`
	// Machines of the pool.
	Machines []Machine `json:"machines" yaml:"machines" jsonschema:"required"`
	// State applies to every machine; a machine's own state is merged over it.
	State MachineState `json:"state,omitempty" yaml:"state,omitempty"`
	// Substitutions are .Vars in file templates; a machine's vars win.
	Substitutions map[string]string `json:"substitutions,omitempty" yaml:"substitutions,omitempty"`
	// Rollout bounds how many machines a disruptive change takes down at once.
	Rollout Rollout `json:"rollout,omitempty" yaml:"rollout,omitempty"`
}

// Machine is one machine of a pool.
type Machine struct {
	// Name is unique in the pool; the node agent finds its entry by it.
	Name string `json:"name" yaml:"name" jsonschema:"required,pattern=^[a-z0-9]([-a-z0-9]*[a-z0-9])?$,maxLength=63"`
	// Address is host or host:port for SSH (port 22 by default).
	Address string `json:"address" yaml:"address" jsonschema:"required"`
	// User for SSH (default root). Bootstrap needs root or passwordless sudo.
	User string `json:"user,omitempty" yaml:"user,omitempty"`
	// HostKey pins the machine's SSH host key, in authorized_keys form
	// ("ssh-ed25519 AAAA…"); a machine presenting another key is refused.
	HostKey string `json:"hostKey" yaml:"hostKey" jsonschema:"required"`
	// Vars are .Vars in this machine's file templates.
	Vars map[string]string `json:"vars,omitempty" yaml:"vars,omitempty"`
	// State is merged over the pool's: an entry with the same key (package
	// name, path, unit name, sysctl key…) replaces the pool's.
	State MachineState `json:"state,omitempty" yaml:"state,omitempty"`

	Origin Origin `json:"-" yaml:"-"`
}

// SSHAddress returns host:port.
func (m Machine) SSHAddress() string {
	if _, _, err := net.SplitHostPort(m.Address); err == nil {
		return m.Address
	}
	return net.JoinHostPort(m.Address, "22")
}

// SSHUser returns the user, root when unset.
func (m Machine) SSHUser() string {
	if m.User == "" {
		return "root"
	}
	return m.User
}

// Rollout bounds disruption across the pool.
type Rollout struct {
	// MaxUnavailable is how many machines may be in a disruptive change at
	// once (default 1).
	MaxUnavailable int `json:"maxUnavailable,omitempty" yaml:"maxUnavailable,omitempty" jsonschema:"minimum=1"`
	// Health must pass after a disruptive change before the machine's slot
	// is released. A machine failing it keeps its slot: the rollout stops.
	Health []HealthCheck `json:"health,omitempty" yaml:"health,omitempty"`
	// HealthTimeout bounds the health checks, retried until it passes (default 1m).
	HealthTimeout Duration `json:"healthTimeout,omitempty" yaml:"healthTimeout,omitempty"`
	// Reboot allows the agent to reboot a machine when a change requires it
	// (default false: the change is applied and status says a reboot is pending).
	Reboot bool `json:"reboot,omitempty" yaml:"reboot,omitempty"`
	// Coordinator is the machine holding the pool's rollout slots (default
	// the first machine). Agents take a slot over SSH, as a user whose key
	// can only run the slot command.
	Coordinator string `json:"coordinator,omitempty" yaml:"coordinator,omitempty"`
}

// MaxUnavailableOrDefault returns MaxUnavailable, 1 when unset.
func (r Rollout) MaxUnavailableOrDefault() int {
	if r.MaxUnavailable <= 0 {
		return 1
	}
	return r.MaxUnavailable
}

// HealthTimeoutOrDefault returns HealthTimeout, 1m when unset.
func (r Rollout) HealthTimeoutOrDefault() time.Duration {
	if r.HealthTimeout.Duration <= 0 {
		return time.Minute
	}
	return r.HealthTimeout.Duration
}

// HealthCheck is a command that must exit 0, or an HTTP URL that must answer 2xx.
type HealthCheck struct {
	// Command runs with /bin/sh -c on the machine.
	Command string `json:"command,omitempty" yaml:"command,omitempty"`
	// HTTP is a URL fetched from the machine.
	HTTP string `json:"http,omitempty" yaml:"http,omitempty"`
}

// MachineState is the desired state of a machine. The agent applies it in
// this order: hostname, swap, sysctls, kernel modules, groups, users,
// directories, files, symlinks, packages, units, firewall.
type MachineState struct {
	// Hostname sets the machine's hostname; it may be a template over
	// .Machine, .Vars and .Facts, e.g. "{{ .Machine.Name }}.{{ .Vars.domain }}".
	Hostname string `json:"hostname,omitempty" yaml:"hostname,omitempty"`
	// Swap "off" turns swap off and comments out swap in /etc/fstab.
	Swap string `json:"swap,omitempty" yaml:"swap,omitempty" jsonschema:"enum=off"`
	// Sysctls are persisted in /etc/sysctl.d/90-tend.conf and applied live.
	Sysctls map[string]string `json:"sysctls,omitempty" yaml:"sysctls,omitempty"`
	// KernelModules are loaded and persisted in /etc/modules-load.d/tend.conf.
	KernelModules []string     `json:"kernelModules,omitempty" yaml:"kernelModules,omitempty"`
	Groups        []LocalGroup `json:"groups,omitempty" yaml:"groups,omitempty"`
	Users         []User       `json:"users,omitempty" yaml:"users,omitempty"`
	// Directories are created with their mode and owner.
	Directories []Directory `json:"directories,omitempty" yaml:"directories,omitempty"`
	Files       []File      `json:"files,omitempty" yaml:"files,omitempty"`
	Symlinks    []Symlink   `json:"symlinks,omitempty" yaml:"symlinks,omitempty"`
	Packages    []Package   `json:"packages,omitempty" yaml:"packages,omitempty"`
	Units       []Unit      `json:"units,omitempty" yaml:"units,omitempty"`
	// Firewall is the machine's whole nftables ruleset, applied atomically.
	Firewall *Firewall `json:"firewall,omitempty" yaml:"firewall,omitempty"`
	// BackupBefore names a Backup of this machine that must succeed before
	// a new revision's changes are applied; a failed backup holds them back.
	BackupBefore string `json:"backupBefore,omitempty" yaml:"backupBefore,omitempty"`
}

// Package is an OS package (apt on Debian and Ubuntu).
type Package struct {
	Name string `json:"name" yaml:"name" jsonschema:"required"`
	// State is present (default) or absent.
	State string `json:"state,omitempty" yaml:"state,omitempty" jsonschema:"enum=present,enum=absent"`
	// Version pins an exact version (and holds it).
	Version string `json:"version,omitempty" yaml:"version,omitempty"`
	// Reboot marks a change to this package as needing a reboot (a kernel, say).
	Reboot bool `json:"reboot,omitempty" yaml:"reboot,omitempty"`
}

// File is a regular file with exact content.
type File struct {
	Path string `json:"path" yaml:"path" jsonschema:"required"`
	// Content is the file's content. Exactly one of content and source.
	Content *string `json:"content,omitempty" yaml:"content,omitempty"`
	// Source is a file in the repository. A SOPS-encrypted file is decrypted
	// with the node's age identity, and its content is never shown.
	Source string `json:"source,omitempty" yaml:"source,omitempty"`
	// Template renders the content as a Go template with .Machine, .Vars and .Facts.
	Template bool `json:"template,omitempty" yaml:"template,omitempty"`
	// Mode in octal (default "0644"; "0600" for a secret).
	Mode  string `json:"mode,omitempty" yaml:"mode,omitempty" jsonschema:"pattern=^0?[0-7]{3\\,4}$"`
	Owner string `json:"owner,omitempty" yaml:"owner,omitempty"`
	Group string `json:"group,omitempty" yaml:"group,omitempty"`
	// State is present (default) or absent.
	State string `json:"state,omitempty" yaml:"state,omitempty" jsonschema:"enum=present,enum=absent"`

	// Line is the position of the entry, for template errors.
	Line int `json:"-" yaml:"-"`
}

// Directory is a directory with a mode and owner.
type Directory struct {
	Path  string `json:"path" yaml:"path" jsonschema:"required"`
	Mode  string `json:"mode,omitempty" yaml:"mode,omitempty" jsonschema:"pattern=^0?[0-7]{3\\,4}$"`
	Owner string `json:"owner,omitempty" yaml:"owner,omitempty"`
	Group string `json:"group,omitempty" yaml:"group,omitempty"`
}

// Symlink points Path at Target.
type Symlink struct {
	Path   string `json:"path" yaml:"path" jsonschema:"required"`
	Target string `json:"target" yaml:"target" jsonschema:"required"`
}

// Unit is a systemd unit.
type Unit struct {
	// Name with its suffix, e.g. web.service.
	Name string `json:"name" yaml:"name" jsonschema:"required"`
	// Content of /etc/systemd/system/NAME; empty manages an existing unit.
	Content string `json:"content,omitempty" yaml:"content,omitempty"`
	// Enabled at boot (default true).
	Enabled *bool `json:"enabled,omitempty" yaml:"enabled,omitempty"`
	// Running now (default true).
	Running *bool `json:"running,omitempty" yaml:"running,omitempty"`
	// Files are paths whose change restarts the unit (its configuration).
	Files []string `json:"files,omitempty" yaml:"files,omitempty"`
	// Disruptive makes a restart of this unit take a rollout slot.
	Disruptive bool `json:"disruptive,omitempty" yaml:"disruptive,omitempty"`
}

// IsEnabled reports Enabled, true when unset.
func (u Unit) IsEnabled() bool { return u.Enabled == nil || *u.Enabled }

// IsRunning reports Running, true when unset.
func (u Unit) IsRunning() bool { return u.Running == nil || *u.Running }

// LocalGroup is a local group.
type LocalGroup struct {
	Name string `json:"name" yaml:"name" jsonschema:"required"`
	GID  *int   `json:"gid,omitempty" yaml:"gid,omitempty"`
	// System allocates the GID from the system range.
	System bool `json:"system,omitempty" yaml:"system,omitempty"`
}

// User is a local user.
type User struct {
	Name   string   `json:"name" yaml:"name" jsonschema:"required"`
	UID    *int     `json:"uid,omitempty" yaml:"uid,omitempty"`
	Groups []string `json:"groups,omitempty" yaml:"groups,omitempty"`
	// Shell (default /bin/bash; /usr/sbin/nologin for a system user).
	Shell string `json:"shell,omitempty" yaml:"shell,omitempty"`
	// Home (default /home/NAME).
	Home   string `json:"home,omitempty" yaml:"home,omitempty"`
	System bool   `json:"system,omitempty" yaml:"system,omitempty"`
	// AuthorizedKeys is the whole of ~/.ssh/authorized_keys.
	AuthorizedKeys []string `json:"authorizedKeys,omitempty" yaml:"authorizedKeys,omitempty"`
	// State is present (default) or absent.
	State string `json:"state,omitempty" yaml:"state,omitempty" jsonschema:"enum=present,enum=absent"`
}

// Firewall is an nftables ruleset. It is checked by nft in plan and applied
// in one transaction. A ruleset that would drop a new SSH connection from
// the pool's other machines (agents reach the rollout coordinator over SSH)
// or from sshFrom is refused, so the agent never cuts off its own access.
type Firewall struct {
	// Ruleset in nft syntax. Exactly one of ruleset and source.
	Ruleset string `json:"ruleset,omitempty" yaml:"ruleset,omitempty"`
	// Source is a file in the repository.
	Source string `json:"source,omitempty" yaml:"source,omitempty"`
	// SSHPort the ruleset must keep open (default: the port of the
	// machine's address, else 22).
	SSHPort int `json:"sshPort,omitempty" yaml:"sshPort,omitempty"`
	// SSHFrom are the addresses operators reach the machines from (a
	// bastion, an admin network's address). Without it SSH must stay open
	// to any address.
	SSHFrom []string `json:"sshFrom,omitempty" yaml:"sshFrom,omitempty"`

	Line int `json:"-" yaml:"-"`
}

// Merge returns base with over's entries replacing base's by key.
func (base MachineState) Merge(over MachineState) MachineState {
	out := base
	if over.Hostname != "" {
		out.Hostname = over.Hostname
	}
	if over.Swap != "" {
		out.Swap = over.Swap
	}
	if over.Firewall != nil {
		out.Firewall = over.Firewall
	}
	if over.BackupBefore != "" {
		out.BackupBefore = over.BackupBefore
	}
	if len(over.Sysctls) > 0 {
		out.Sysctls = map[string]string{}
		for k, v := range base.Sysctls {
			out.Sysctls[k] = v
		}
		for k, v := range over.Sysctls {
			out.Sysctls[k] = v
		}
	}
	out.KernelModules = mergeBy(base.KernelModules, over.KernelModules, func(s string) string { return s })
	out.Groups = mergeBy(base.Groups, over.Groups, func(g LocalGroup) string { return g.Name })
	out.Users = mergeBy(base.Users, over.Users, func(u User) string { return u.Name })
	out.Directories = mergeBy(base.Directories, over.Directories, func(d Directory) string { return path.Clean(d.Path) })
	out.Files = mergeBy(base.Files, over.Files, func(f File) string { return path.Clean(f.Path) })
	out.Symlinks = mergeBy(base.Symlinks, over.Symlinks, func(s Symlink) string { return path.Clean(s.Path) })
	out.Packages = mergeBy(base.Packages, over.Packages, func(p Package) string { return p.Name })
	out.Units = mergeBy(base.Units, over.Units, func(u Unit) string { return u.Name })
	return out
}

func mergeBy[T any](base, over []T, key func(T) string) []T {
	if len(over) == 0 {
		return base
	}
	idx := map[string]int{}
	out := append([]T(nil), base...)
	for i, b := range out {
		idx[key(b)] = i
	}
	for _, o := range over {
		if i, ok := idx[key(o)]; ok {
			out[i] = o
			continue
		}
		idx[key(o)] = len(out)
		out = append(out, o)
	}
	return out
}

// Machine returns the machine named name.
func (p *MachinePool) Machine(name string) (*Machine, error) {
	var names []string
	for i := range p.Spec.Machines {
		if p.Spec.Machines[i].Name == name {
			return &p.Spec.Machines[i], nil
		}
		names = append(names, p.Spec.Machines[i].Name)
	}
	return nil, &Error{Origin: p.Origin, Msg: fmt.Sprintf("no machine %q in MachinePool %s", name, p.Metadata.Name),
		Hint: "the pool has: " + strings.Join(names, ", ")}
}

// StateFor returns the merged desired state of machine m.
func (p *MachinePool) StateFor(m *Machine) MachineState {
	return p.Spec.State.Merge(m.State)
}

// VarsFor returns the template variables of machine m.
func (p *MachinePool) VarsFor(m *Machine) map[string]string {
	vars := map[string]string{"pool_name": p.Metadata.Name, "machine_name": m.Name}
	for k, v := range p.Spec.Substitutions {
		vars[k] = v
	}
	for k, v := range m.Vars {
		vars[k] = v
	}
	return vars
}

// Coordinator returns the machine holding the rollout slots.
func (p *MachinePool) Coordinator() *Machine {
	if c := p.Spec.Rollout.Coordinator; c != "" {
		if m, err := p.Machine(c); err == nil {
			return m
		}
	}
	if len(p.Spec.Machines) == 0 {
		return nil
	}
	return &p.Spec.Machines[0]
}

// IntervalOrDefault returns the interval, 1m when unset.
func (s MachinePoolSpec) IntervalOrDefault() time.Duration {
	if s.Interval.Duration <= 0 {
		return time.Minute
	}
	return s.Interval.Duration
}

// MachinePool returns the pool named name.
func (r *Repo) MachinePool(name string) (*MachinePool, error) {
	var names []string
	for _, p := range r.MachinePools {
		if p.Metadata.Name == name {
			return p, nil
		}
		names = append(names, p.Metadata.Name)
	}
	hint := "add a file with `kind: MachinePool` and `metadata.name: " + name + "` to the repository"
	if len(names) > 0 {
		hint = "the repository defines: " + strings.Join(names, ", ")
	}
	return nil, &Error{Msg: fmt.Sprintf("no MachinePool named %q in %s", name, r.Root), Hint: hint}
}

var modeRE = regexp.MustCompile(`^0?[0-7]{3,4}$`)

// ParseMode parses an octal mode, def when empty.
func ParseMode(s string, def uint32) (uint32, error) {
	if s == "" {
		return def, nil
	}
	if !modeRE.MatchString(s) {
		return 0, fmt.Errorf("mode %q is not octal like \"0644\"", s)
	}
	v, err := strconv.ParseUint(s, 8, 32)
	return uint32(v), err
}

// validatePool checks what the schema cannot: unique names, absolute
// paths, parseable host keys and modes, one of content and source.
func validatePool(p *MachinePool) Errors {
	var errs Errors
	at := func(line int, msg, hint string) {
		errs = append(errs, &Error{Origin: Origin{File: p.Origin.File, Line: line}, Object: "MachinePool/" + p.Metadata.Name, Msg: msg, Hint: hint})
	}
	if len(p.Spec.Machines) == 0 {
		at(p.Origin.Line, "no machines", "list the pool's machines under spec.machines")
	}
	seen := map[string]bool{}
	for _, m := range p.Spec.Machines {
		if seen[m.Name] {
			at(m.Origin.Line, fmt.Sprintf("machine %q is listed twice", m.Name), "give each machine a unique name")
		}
		seen[m.Name] = true
		if m.Address == "" {
			at(m.Origin.Line, fmt.Sprintf("machine %q has no address", m.Name), "set address: host or host:port")
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.HostKey)); err != nil {
			at(m.Origin.Line, fmt.Sprintf("machine %q: hostKey is not an SSH public key", m.Name),
				"pin the key the machine presents: ssh-keyscan -t ed25519 HOST, or cat /etc/ssh/ssh_host_ed25519_key.pub on it")
		}
		validateState(p.StateFor(&m), m.Name, m.Origin.Line, at)
	}
	if c := p.Spec.Rollout.Coordinator; c != "" && !seen[c] {
		at(p.Origin.Line, fmt.Sprintf("rollout.coordinator %q is not a machine of the pool", c), "name one of spec.machines")
	}
	for _, h := range p.Spec.Rollout.Health {
		if (h.Command == "") == (h.HTTP == "") {
			at(p.Origin.Line, "a health check needs exactly one of command and http", "write - command: systemctl is-active web, or - http: http://127.0.0.1:8080/healthz")
		}
	}
	return errs
}

func validateState(s MachineState, machine string, line int, at func(int, string, string)) {
	where := func(what string) string { return fmt.Sprintf("machine %s: %s", machine, what) }
	for _, f := range s.Files {
		l := line
		if f.Line > 0 {
			l = f.Line
		}
		if !path.IsAbs(f.Path) {
			at(l, where(fmt.Sprintf("file path %q is not absolute", f.Path)), "write the full path, e.g. /etc/app.conf")
		}
		if f.State != "absent" && (f.Content == nil) == (f.Source == "") {
			at(l, where(fmt.Sprintf("file %s needs exactly one of content and source", f.Path)), "set content: for inline text, or source: for a file in the repository")
		}
		if _, err := ParseMode(f.Mode, 0o644); err != nil {
			at(l, where(fmt.Sprintf("file %s: %v", f.Path, err)), "write the mode in octal, quoted: \"0644\"")
		}
	}
	for _, d := range s.Directories {
		if !path.IsAbs(d.Path) {
			at(line, where(fmt.Sprintf("directory path %q is not absolute", d.Path)), "write the full path")
		}
		if _, err := ParseMode(d.Mode, 0o755); err != nil {
			at(line, where(fmt.Sprintf("directory %s: %v", d.Path, err)), "write the mode in octal, quoted: \"0755\"")
		}
	}
	for _, l := range s.Symlinks {
		if !path.IsAbs(l.Path) {
			at(line, where(fmt.Sprintf("symlink path %q is not absolute", l.Path)), "write the full path")
		}
	}
	for _, u := range s.Units {
		if !strings.Contains(u.Name, ".") {
			at(line, where(fmt.Sprintf("unit %q has no suffix", u.Name)), "name the unit with its type, e.g. "+u.Name+".service")
		}
	}
	if f := s.Firewall; f != nil && (f.Ruleset == "") == (f.Source == "") {
		at(line, where("firewall needs exactly one of ruleset and source"), "set ruleset: inline, or source: a file in the repository")
	}
	if f := s.Firewall; f != nil {
		for _, a := range f.SSHFrom {
			if _, err := netip.ParseAddr(a); err != nil {
				at(f.Line, where(fmt.Sprintf("firewall sshFrom %q is not an IP address", a)), "list the addresses operators connect from, e.g. sshFrom: [192.0.2.10]")
			}
		}
	}
}
