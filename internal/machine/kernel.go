package machine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/pmezard/go-difflib/difflib"
)

// sysctlRes persists every sysctl in one file and applies them live.
type sysctlRes struct{ values map[string]string }

const sysctlFile = "/etc/sysctl.d/90-tend.conf"

func (s *sysctlRes) key() string { return "sysctl " + sysctlFile }

// sysctlConf is the persisted form. Pure.
func sysctlConf(values map[string]string) []byte {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by tend from the MachinePool; edits are put back.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, values[k])
	}
	return []byte(b.String())
}

func procSys(key string) string { return "/proc/sys/" + strings.ReplaceAll(key, ".", "/") }

// sameSysctl compares values as the kernel prints them (tabs between numbers).
func sameSysctl(live, want string) bool {
	return strings.Join(strings.Fields(live), " ") == strings.Join(strings.Fields(want), " ")
}

func (s *sysctlRes) plan(ctx context.Context, sys *System) (*Change, error) {
	var det []string
	have, _ := os.ReadFile(sys.Path(sysctlFile))
	if string(have) != string(sysctlConf(s.values)) {
		det = append(det, sysctlFile+" differs")
	}
	keys := make([]string, 0, len(s.values))
	for k := range s.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		live, err := os.ReadFile(sys.Path(procSys(k)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, withHint(fmt.Errorf("sysctl %s does not exist on this kernel", k), "check the key's spelling, or load the module that provides it (state.kernelModules)")
		}
		if err != nil {
			return nil, err
		}
		if !sameSysctl(string(live), s.values[k]) {
			det = append(det, fmt.Sprintf("%s: %s → %s", k, strings.TrimSpace(string(live)), s.values[k]))
		}
	}
	if len(det) == 0 {
		return nil, nil
	}
	return &Change{Action: Update, Details: det}, nil
}

func (s *sysctlRes) apply(ctx context.Context, sys *System, c *Change) error {
	if err := writeAtomic(sys.Path(sysctlFile), sysctlConf(s.values), 0o644, -1, -1); err != nil {
		return err
	}
	var errs []error
	for k, v := range s.values {
		live, _ := os.ReadFile(sys.Path(procSys(k)))
		if sameSysctl(string(live), v) {
			continue
		}
		if err := os.WriteFile(sys.Path(procSys(k)), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("set %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// modulesRes loads kernel modules and persists the list.
type modulesRes struct{ names []string }

const modulesFile = "/etc/modules-load.d/tend.conf"

func (m *modulesRes) key() string { return "kernel-modules " + modulesFile }

func modulesConf(names []string) []byte {
	s := append([]string(nil), names...)
	sort.Strings(s)
	return []byte("# Written by tend from the MachinePool.\n" + strings.Join(s, "\n") + "\n")
}

// loadedModules reads /proc/modules and the built-in list. Pure over its input.
func loadedModules(procModules, builtin []byte) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(string(procModules), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out[f[0]] = true
		}
	}
	for _, l := range strings.Split(string(builtin), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			name := strings.TrimSuffix(l[strings.LastIndex(l, "/")+1:], ".ko")
			out[strings.ReplaceAll(name, "-", "_")] = true
		}
	}
	return out
}

func (m *modulesRes) loaded(sys *System) map[string]bool {
	pm, _ := os.ReadFile(sys.Path("/proc/modules"))
	var uts syscall.Utsname
	syscall.Uname(&uts)
	rel := utsString(uts.Release[:])
	bi, _ := os.ReadFile(sys.Path("/lib/modules/" + rel + "/modules.builtin"))
	out := loadedModules(pm, bi)
	// A module built into the kernel with parameters shows only in sysfs.
	for _, n := range m.names {
		n = strings.ReplaceAll(n, "-", "_")
		if _, err := os.Stat(sys.Path("/sys/module/" + n)); err == nil {
			out[n] = true
		}
	}
	return out
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func (m *modulesRes) plan(ctx context.Context, sys *System) (*Change, error) {
	var det []string
	have, _ := os.ReadFile(sys.Path(modulesFile))
	if string(have) != string(modulesConf(m.names)) {
		det = append(det, modulesFile+" differs")
	}
	loaded := m.loaded(sys)
	for _, n := range m.names {
		if !loaded[strings.ReplaceAll(n, "-", "_")] {
			det = append(det, "load "+n)
		}
	}
	if len(det) == 0 {
		return nil, nil
	}
	return &Change{Action: Update, Details: det}, nil
}

func (m *modulesRes) apply(ctx context.Context, sys *System, c *Change) error {
	if err := writeAtomic(sys.Path(modulesFile), modulesConf(m.names), 0o644, -1, -1); err != nil {
		return err
	}
	loaded := m.loaded(sys)
	var errs []error
	for _, n := range m.names {
		if loaded[strings.ReplaceAll(n, "-", "_")] {
			continue
		}
		if _, err := sys.run(ctx, "modprobe", n); err != nil {
			errs = append(errs, withHint(fmt.Errorf("load module %s: %w", n, err), "check the name with modinfo "+n+"; a container cannot load modules"))
		}
	}
	return errors.Join(errs...)
}

// hostnameRes sets the hostname, live and in /etc/hostname.
type hostnameRes struct{ name string }

func (h *hostnameRes) key() string { return "hostname" }

func (h *hostnameRes) plan(ctx context.Context, sys *System) (*Change, error) {
	var det []string
	file, _ := os.ReadFile(sys.Path("/etc/hostname"))
	if strings.TrimSpace(string(file)) != h.name {
		det = append(det, fmt.Sprintf("/etc/hostname: %q → %q", strings.TrimSpace(string(file)), h.name))
	}
	if sys.Root == "/" {
		if live, _ := os.Hostname(); live != h.name {
			det = append(det, fmt.Sprintf("live: %q → %q", live, h.name))
		}
	}
	if len(det) == 0 {
		return nil, nil
	}
	return &Change{Action: Update, Details: det}, nil
}

func (h *hostnameRes) apply(ctx context.Context, sys *System, c *Change) error {
	if err := writeAtomic(sys.Path("/etc/hostname"), []byte(h.name+"\n"), 0o644, -1, -1); err != nil {
		return err
	}
	if sys.Root == "/" {
		if live, _ := os.Hostname(); live != h.name {
			return syscall.Sethostname([]byte(h.name))
		}
	}
	return nil
}

// swapRes turns swap off now and at boot.
type swapRes struct{}

func (swapRes) key() string { return "swap" }

// swapFstab comments out swap entries. Pure: returns nil when none is active.
func swapFstab(fstab []byte) []byte {
	lines := strings.Split(string(fstab), "\n")
	changed := false
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 3 && !strings.HasPrefix(f[0], "#") && f[2] == "swap" {
			lines[i] = "# swap off by tend: " + l
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return []byte(strings.Join(lines, "\n"))
}

// activeSwaps lists /proc/swaps entries. Pure.
func activeSwaps(procSwaps []byte) []string {
	var out []string
	for i, l := range strings.Split(string(procSwaps), "\n") {
		if f := strings.Fields(l); i > 0 && len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

func (swapRes) plan(ctx context.Context, sys *System) (*Change, error) {
	var det []string
	ps, _ := os.ReadFile(sys.Path("/proc/swaps"))
	if a := activeSwaps(ps); len(a) > 0 {
		det = append(det, "active: "+strings.Join(a, ", "))
	}
	fstab, _ := os.ReadFile(sys.Path("/etc/fstab"))
	if swapFstab(fstab) != nil {
		det = append(det, "/etc/fstab mounts swap at boot")
	}
	if len(det) == 0 {
		return nil, nil
	}
	return &Change{Action: Update, Details: det}, nil
}

func (swapRes) apply(ctx context.Context, sys *System, c *Change) error {
	fstab, _ := os.ReadFile(sys.Path("/etc/fstab"))
	if nf := swapFstab(fstab); nf != nil {
		fi, err := os.Stat(sys.Path("/etc/fstab"))
		if err != nil {
			return err
		}
		if err := writeAtomic(sys.Path("/etc/fstab"), nf, fi.Mode().Perm(), -1, -1); err != nil {
			return err
		}
	}
	ps, _ := os.ReadFile(sys.Path("/proc/swaps"))
	if len(activeSwaps(ps)) > 0 {
		if _, err := sys.run(ctx, "swapoff", "-a"); err != nil {
			return err
		}
	}
	return nil
}

// textDiff is a short unified diff of two texts, or a note for binary data.
func textDiff(a, b []byte) []string {
	if !utf8.Valid(a) || !utf8.Valid(b) {
		return []string{fmt.Sprintf("binary content: %d → %d bytes", len(a), len(b))}
	}
	s, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: difflib.SplitLines(string(a)), B: difflib.SplitLines(string(b)),
		FromFile: "live", ToFile: "desired", Context: 2})
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 40 {
		lines = append(lines[:40], fmt.Sprintf("… %d more lines", len(lines)-40))
	}
	return lines
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
