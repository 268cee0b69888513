package machine

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
)

// PackageManager installs and removes OS packages. apt is implemented; the
// interface is the seam for dnf.
type PackageManager interface {
	Name() string
	// Installed returns installed packages and their versions, without
	// starting a process: a no-op converge must not run the package manager.
	Installed(sys *System) (map[string]string, error)
	// Install installs packages given as "name" or "name=version".
	Install(ctx context.Context, sys *System, specs []string) error
	Remove(ctx context.Context, sys *System, names []string) error
}

// Apt is Debian's and Ubuntu's package manager.
type Apt struct {
	mu      sync.Mutex
	updated bool
}

// Name is "apt".
func (*Apt) Name() string { return "apt" }

// Installed reads dpkg's status database.
func (*Apt) Installed(sys *System) (map[string]string, error) {
	data, err := os.ReadFile(sys.Path("/var/lib/dpkg/status"))
	if err != nil {
		return nil, fmt.Errorf("read dpkg status: %w", err)
	}
	return parseDpkgStatus(data), nil
}

// parseDpkgStatus returns installed packages → version. Pure.
func parseDpkgStatus(data []byte) map[string]string {
	out := map[string]string{}
	for _, para := range strings.Split(string(data), "\n\n") {
		var name, version, status string
		for _, l := range strings.Split(para, "\n") {
			switch {
			case strings.HasPrefix(l, "Package: "):
				name = strings.TrimPrefix(l, "Package: ")
			case strings.HasPrefix(l, "Version: "):
				version = strings.TrimPrefix(l, "Version: ")
			case strings.HasPrefix(l, "Status: "):
				status = strings.TrimPrefix(l, "Status: ")
			}
		}
		if name != "" && strings.HasSuffix(status, " installed") && !strings.HasPrefix(status, "deinstall") {
			out[name] = version
		}
	}
	return out
}

func (a *Apt) update(ctx context.Context, sys *System) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.updated {
		return nil
	}
	if _, err := sys.run(ctx, "apt-get", "update", "-q"); err != nil {
		return withHint(fmt.Errorf("apt-get update: %w", err), "check the machine's apt sources and that it reaches them")
	}
	a.updated = true
	return nil
}

// Install runs apt-get install, keeping config files tend wrote before the
// package (--force-confold), and holds pinned versions.
func (a *Apt) Install(ctx context.Context, sys *System, specs []string) error {
	if err := a.update(ctx, sys); err != nil {
		return err
	}
	args := append([]string{"install", "-y", "-q", "--no-install-recommends", "--allow-downgrades", "--allow-change-held-packages",
		"-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef"}, specs...)
	_, err := sys.run(ctx, "apt-get", args...)
	if err != nil && strings.Contains(err.Error(), "dpkg --configure -a") {
		// A run killed in the middle left dpkg half done: finish it, then retry.
		if _, cerr := sys.run(ctx, "dpkg", "--configure", "-a", "--force-confold"); cerr == nil {
			_, err = sys.run(ctx, "apt-get", args...)
		}
	}
	if err != nil {
		if e, ok := err.(*ExecError); ok && strings.Contains(e.Out, "Unable to locate package") || strings.Contains(err.Error(), "has no installation candidate") {
			return withHint(err, "check the package name, and that the machine's apt sources carry it")
		}
		if strings.Contains(err.Error(), "was not found") || strings.Contains(err.Error(), "Version '") {
			return withHint(err, "that version is not in the machine's apt sources; apt-cache policy NAME lists the ones that are")
		}
		return err
	}
	var hold []string
	for _, s := range specs {
		if i := strings.Index(s, "="); i > 0 {
			hold = append(hold, s[:i])
		}
	}
	if len(hold) > 0 {
		if _, err := sys.run(ctx, "apt-mark", append([]string{"hold"}, hold...)...); err != nil {
			return err
		}
	}
	return nil
}

// Remove runs apt-get remove.
func (a *Apt) Remove(ctx context.Context, sys *System, names []string) error {
	_, err := sys.run(ctx, "apt-get", append([]string{"remove", "-y", "-q", "--allow-change-held-packages"}, names...)...)
	return err
}

// pkgRes is one package.
type pkgRes struct {
	name, version string
	absent        bool
	reboot        bool
	mgr           PackageManager
	cache         *pkgCache
}

func (p *pkgRes) key() string { return "package " + p.name }

func (p *pkgRes) spec() string {
	if p.version != "" {
		return p.name + "=" + p.version
	}
	return p.name
}

func (p *pkgRes) plan(ctx context.Context, sys *System) (*Change, error) {
	inst, err := p.cache.get(sys, p.mgr)
	if err != nil {
		return nil, err
	}
	have, ok := inst[p.name]
	switch {
	case p.absent && ok:
		return &Change{Action: Delete, Details: []string{"installed: " + have}, Reboot: p.reboot, Disruptive: p.reboot}, nil
	case p.absent:
		return nil, nil
	case !ok:
		d := "install"
		if p.version != "" {
			d += " " + p.version
		}
		return &Change{Action: Create, Details: []string{d}, Reboot: p.reboot, Disruptive: p.reboot}, nil
	case p.version != "" && have != p.version:
		return &Change{Action: Update, Details: []string{have + " → " + p.version}, Reboot: p.reboot, Disruptive: p.reboot}, nil
	}
	return nil, nil
}

func (p *pkgRes) apply(ctx context.Context, sys *System, c *Change) error {
	if p.absent {
		return p.mgr.Remove(ctx, sys, []string{p.name})
	}
	return p.mgr.Install(ctx, sys, []string{p.spec()})
}

// installBatch installs every package change of changes in one run of the
// package manager, the common case; it returns the resources it installed.
// When the batch fails (one bad name fails the whole apt run), nothing is
// returned and each package is then tried alone, so one bad package does
// not hold back the others.
func installBatch(ctx context.Context, sys *System, changes []*Change) map[string]bool {
	var specs []string
	var mgr PackageManager
	for _, c := range changes {
		if p, ok := c.res.(*pkgRes); ok && !p.absent {
			specs, mgr = append(specs, p.spec()), p.mgr
		}
	}
	if len(specs) < 2 {
		return nil
	}
	if err := mgr.Install(ctx, sys, specs); err != nil {
		return nil
	}
	done := map[string]bool{}
	for _, c := range changes {
		if p, ok := c.res.(*pkgRes); ok && !p.absent {
			done[c.Resource] = true
		}
	}
	return done
}
