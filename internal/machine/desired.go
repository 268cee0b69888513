package machine

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"text/template"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret/unseal"
)

// Facts describe the machine; file templates see them as .Facts.
type Facts struct {
	Hostname  string   `json:"hostname"`
	OS        string   `json:"os"`        // ID from /etc/os-release, e.g. debian
	OSVersion string   `json:"osVersion"` // VERSION_ID, e.g. 12
	Arch      string   `json:"arch"`
	CPUs      int      `json:"cpus"`
	MemoryMB  int      `json:"memoryMB"`
	IPs       []string `json:"ips"`
}

// GatherFacts reads the facts of the machine sys is.
func GatherFacts(sys *System) Facts {
	f := Facts{Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}
	f.Hostname, _ = os.Hostname()
	if rel, err := os.ReadFile(sys.Path("/etc/os-release")); err == nil {
		for _, l := range strings.Split(string(rel), "\n") {
			k, v, _ := strings.Cut(l, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "ID":
				f.OS = v
			case "VERSION_ID":
				f.OSVersion = v
			}
		}
	}
	if mi, err := os.ReadFile(sys.Path("/proc/meminfo")); err == nil {
		var kb int
		fmt.Sscanf(strings.SplitN(string(mi), "\n", 2)[0], "MemTotal: %d kB", &kb)
		f.MemoryMB = kb / 1024
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
				f.IPs = append(f.IPs, ipn.IP.String())
			}
		}
	}
	return f
}

// Desired is a machine's compiled desired state: its resources in apply order.
type Desired struct {
	Machine   string
	resources []resource
	changed   map[string]bool
	pkgs      pkgCache
}

// pkgCache reads the package database once per plan.
type pkgCache struct {
	read bool
	m    map[string]string
	err  error
}

func (c *pkgCache) get(sys *System, mgr PackageManager) (map[string]string, error) {
	if !c.read {
		c.m, c.err = mgr.Installed(sys)
		c.read = true
	}
	return c.m, c.err
}

// Len is the number of resources of the state (removals of what left git
// not counted).
func (d *Desired) Len() int { return len(d.Keys()) }

// Keys lists the resources of the state.
func (d *Desired) Keys() []string {
	var out []string
	for _, r := range d.resources {
		if _, ok := r.(*pruneRes); !ok {
			out = append(out, r.key())
		}
	}
	return out
}

// Options tune Compile.
type Options struct {
	// Root is the checkout of the ops repository; sources are read from it.
	Root string
	// Identities decrypt SOPS files.
	Identities *unseal.Identities
	Facts      Facts
	// StateDir keeps the agent's own records (default /var/lib/tend/node).
	StateDir string
	Packages PackageManager
}

// TemplateData is what file templates see.
type TemplateData struct {
	Machine struct{ Name, Address, Pool string }
	Vars    map[string]string
	Facts   Facts
}

// Compile turns machine m of pool p into resources: templates rendered,
// sources read, secrets decrypted. Errors carry file:line and a hint; a
// machine with any error is not applied at all.
func Compile(p *model.MachinePool, m *model.Machine, o Options) (*Desired, error) {
	st := p.StateFor(m)
	if o.StateDir == "" {
		o.StateDir = "/var/lib/tend/node"
	}
	if o.Packages == nil {
		o.Packages = &Apt{}
	}
	d := &Desired{Machine: m.Name, changed: map[string]bool{}}
	var data TemplateData
	data.Machine.Name, data.Machine.Address, data.Machine.Pool = m.Name, m.Address, p.Metadata.Name
	data.Vars, data.Facts = p.VarsFor(m), o.Facts
	var errs model.Errors
	obj := "MachinePool/" + p.Metadata.Name

	if st.Hostname != "" {
		name, err := hostname(st.Hostname, data)
		if err != nil {
			errs = append(errs, &model.Error{Origin: p.Origin, Object: obj, Msg: "hostname: " + err.Error(),
				Hint: "a hostname is labels of letters, digits and '-', dot-separated, at most 253 characters; a template sees .Machine, .Vars and .Facts, e.g. hostname: \"{{ .Machine.Name }}.{{ .Vars.domain }}\""})
		} else {
			d.resources = append(d.resources, &hostnameRes{name: name})
		}
	}
	if st.Swap == "off" {
		d.resources = append(d.resources, swapRes{})
	}
	if len(st.Sysctls) > 0 {
		d.resources = append(d.resources, &sysctlRes{values: st.Sysctls})
	}
	if len(st.KernelModules) > 0 {
		d.resources = append(d.resources, &modulesRes{names: st.KernelModules})
	}
	for _, g := range st.Groups {
		d.resources = append(d.resources, &groupRes{name: g.Name, gid: g.GID, system: g.System})
	}
	for _, u := range st.Users {
		d.resources = append(d.resources, &userRes{name: u.Name, uid: u.UID, groups: u.Groups, shell: u.Shell, home: u.Home,
			system: u.System, authorizedKeys: u.AuthorizedKeys, manageKeys: u.AuthorizedKeys != nil, absent: u.State == "absent"})
	}
	for _, dir := range st.Directories {
		mode, _ := model.ParseMode(dir.Mode, 0o755)
		d.resources = append(d.resources, &dirRes{path: path.Clean(dir.Path), mode: fs.FileMode(mode), owner: dir.Owner, group: dir.Group})
	}
	for _, f := range st.Files {
		r, err := compileFile(p, f, data, o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.resources = append(d.resources, r)
	}
	for _, l := range st.Symlinks {
		d.resources = append(d.resources, &linkRes{path: path.Clean(l.Path), target: l.Target})
	}
	for _, pk := range st.Packages {
		d.resources = append(d.resources, &pkgRes{name: pk.Name, version: pk.Version, absent: pk.State == "absent", reboot: pk.Reboot,
			mgr: o.Packages, cache: &d.pkgs})
	}
	for _, u := range st.Units {
		var content []byte
		if u.Content != "" {
			content = []byte(u.Content)
		}
		d.resources = append(d.resources, &unitRes{name: u.Name, content: content, enabled: u.IsEnabled(), running: u.IsRunning(),
			files: u.Files, disruptive: u.Disruptive, changed: d.changed})
	}
	if fw := st.Firewall; fw != nil {
		rules, origin := fw.Ruleset, model.Origin{File: p.Origin.File, Line: fw.Line}.String()
		if fw.Source != "" {
			b, err := os.ReadFile(filepath.Join(o.Root, fw.Source))
			if err != nil {
				errs = append(errs, &model.Error{Origin: model.Origin{File: p.Origin.File, Line: fw.Line}, Object: obj,
					Msg: fmt.Sprintf("firewall source %s: %v", fw.Source, err), Hint: "the path is relative to the repository root"})
			}
			rules, origin = string(b), fw.Source
		}
		port := fw.SSHPort
		if port == 0 {
			if _, ps, err := net.SplitHostPort(m.SSHAddress()); err == nil {
				port, _ = strconv.Atoi(ps)
			}
		}
		fr := &firewallRes{ruleset: rules, sshPort: port, origin: origin, stateDir: o.StateDir}
		fr.self, fr.sources = sshSources(p, m, fw)
		d.resources = append(d.resources, fr)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return d, nil
}

var tmplLine = regexp.MustCompile(`^template: [^:]*:(\d+)(?::\d+)?: (.*)$`)

func compileFile(p *model.MachinePool, f model.File, data TemplateData, o Options) (*fileRes, *model.Error) {
	obj := "MachinePool/" + p.Metadata.Name
	r := &fileRes{path: path.Clean(f.Path), owner: f.Owner, group: f.Group, absent: f.State == "absent"}
	if r.absent {
		return r, nil
	}
	origin := model.Origin{File: p.Origin.File, Line: f.Line}
	var content []byte
	if f.Content != nil {
		content = []byte(*f.Content)
	} else {
		origin = model.Origin{File: f.Source}
		b, err := os.ReadFile(filepath.Join(o.Root, f.Source))
		if err != nil {
			return nil, &model.Error{Origin: model.Origin{File: p.Origin.File, Line: f.Line}, Object: obj,
				Msg: fmt.Sprintf("file %s: source %s: %v", f.Path, f.Source, unwrapPath(err)), Hint: "the source path is relative to the repository root"}
		}
		content = b
		if unseal.IsEncrypted(b) {
			plain, err := unseal.Decrypt(f.Source, b, o.Identities)
			if err != nil {
				return nil, &model.Error{Origin: origin, Object: obj, Msg: fmt.Sprintf("file %s: %v", f.Path, err),
					Hint: model.HintOf(err)}
			}
			content, r.sensitive = plain, true
		}
	}
	def := uint32(0o644)
	if r.sensitive {
		def = 0o600
	}
	mode, _ := model.ParseMode(f.Mode, def)
	r.mode = fs.FileMode(mode)
	if f.Template {
		t, err := template.New(f.Path).Option("missingkey=error").Parse(string(content))
		if err == nil {
			var buf bytes.Buffer
			if err = t.Execute(&buf, data); err == nil {
				content = buf.Bytes()
			}
		}
		if err != nil {
			return nil, templateError(err, origin, obj, f.Path, r.sensitive)
		}
	}
	r.content = content
	return r, nil
}

// templateError points a text/template error at the line in the pool file
// (inline content) or the source file.
func templateError(err error, origin model.Origin, obj, path string, sensitive bool) *model.Error {
	msg := err.Error()
	line := 0
	if m := tmplLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if origin.Line > 0 && line > 0 {
		origin.Line += line - 1
	} else if line > 0 {
		origin.Line = line
	}
	if sensitive {
		// The message may quote the secret's text.
		msg = "the template does not parse or execute (details withheld: the file is a secret)"
	}
	return &model.Error{Origin: origin, Object: obj, Msg: fmt.Sprintf("file %s: template: %s", path, msg),
		Hint: "templates see .Machine (.Name .Address .Pool), .Vars (pool substitutions and machine vars) and .Facts (.Hostname .OS .OSVersion .Arch .CPUs .MemoryMB .IPs)"}
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// sshSources are the addresses that must keep SSH access to machine m: the
// pool's other machines, whose agents reach the coordinator over SSH, and
// the operators' addresses in sshFrom, or, without them, any address
// (203.0.113.1, from a documentation range, stands for it). Pure.
func sshSources(p *model.MachinePool, m *model.Machine, fw *model.Firewall) (self netip.Addr, from []netip.Addr) {
	addrOf := func(mm *model.Machine) netip.Addr {
		host, _, err := net.SplitHostPort(mm.SSHAddress())
		if err != nil {
			return netip.Addr{}
		}
		a, _ := netip.ParseAddr(host)
		return a
	}
	self = addrOf(m)
	for i := range p.Spec.Machines {
		if mm := &p.Spec.Machines[i]; mm.Name != m.Name {
			if a := addrOf(mm); a.IsValid() {
				from = append(from, a)
			}
		}
	}
	for _, s := range fw.SSHFrom {
		if a, err := netip.ParseAddr(s); err == nil {
			from = append(from, a)
		}
	}
	if len(fw.SSHFrom) == 0 {
		from = append(from, netip.MustParseAddr("203.0.113.1"))
	}
	return self, from
}

var hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// hostname renders a hostname that is a template and checks the result is
// a valid name (RFC 1123), so a typo never reaches the machine. Pure.
func hostname(spec string, data TemplateData) (string, error) {
	name := spec
	if strings.Contains(spec, "{{") {
		t, err := template.New("hostname").Option("missingkey=error").Parse(spec)
		if err != nil {
			return "", fmt.Errorf("template: %v", strings.TrimPrefix(err.Error(), "template: hostname:1: "))
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return "", fmt.Errorf("template: %v", strings.TrimPrefix(err.Error(), "template: hostname:1:"))
		}
		name = strings.TrimSpace(b.String())
	}
	if len(name) > 253 {
		return "", fmt.Errorf("%q is longer than 253 characters", name)
	}
	for _, l := range strings.Split(name, ".") {
		if !hostLabel.MatchString(l) {
			return "", fmt.Errorf("%q is not a valid hostname", name)
		}
	}
	return name, nil
}
