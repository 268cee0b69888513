package machine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// unitRes is a systemd unit: its file, whether it is enabled, and whether
// it runs. A change to the file, or to one of the files it declares,
// restarts it; a restart that fails puts the previous unit file back.
type unitRes struct {
	name       string
	content    []byte // nil: the unit exists already (from a package)
	enabled    bool
	running    bool
	files      []string
	disruptive bool

	changed map[string]bool // paths changed in this plan, filled as files are planned
	// Settle is how long a restarted unit must stay active to count as started.
	settle time.Duration
}

func (u *unitRes) key() string { return "unit " + u.name }

func (u *unitRes) path() string { return "/etc/systemd/system/" + u.name }

// unitState is what systemctl show says.
type unitState struct {
	load, active, fileState string
}

func parseShow(out []byte) unitState {
	var s unitState
	for _, l := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "LoadState":
			s.load = v
		case "ActiveState":
			s.active = v
		case "UnitFileState":
			s.fileState = v
		}
	}
	return s
}

func (u *unitRes) show(ctx context.Context, sys *System) (unitState, error) {
	out, err := sys.run(ctx, "systemctl", "show", "--property=LoadState,ActiveState,UnitFileState", u.name)
	if err != nil {
		return unitState{}, err
	}
	return parseShow(out), nil
}

// dependsOnFailed reports whether a file this unit restarts for failed.
func (u *unitRes) dependsOnFailed(failed map[string]bool) bool {
	for _, f := range u.files {
		if failed["file "+f] {
			return true
		}
	}
	return failed["file "+u.path()]
}

type unitPlan struct {
	writeFile, restart, start, stop, enable, disable bool
}

func (u *unitRes) plan(ctx context.Context, sys *System) (*Change, error) {
	var p unitPlan
	var det []string
	if u.content != nil {
		have, err := os.ReadFile(sys.Path(u.path()))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if string(have) != string(u.content) {
			p.writeFile = true
			if have == nil {
				det = append(det, "create "+u.path())
			} else {
				det = append(det, textDiff(have, u.content)...)
			}
		}
	}
	st, err := u.show(ctx, sys)
	if err != nil {
		return nil, err
	}
	if st.load == "not-found" && u.content == nil {
		return nil, withHint(fmt.Errorf("unit %s does not exist", u.name), "give the unit's content, or install the package that ships it first")
	}
	enabled := st.fileState == "enabled" || st.fileState == "enabled-runtime" || st.fileState == "static" || st.fileState == "alias"
	if u.enabled && !enabled && st.fileState != "static" {
		p.enable = true
		det = append(det, "enable")
	}
	if !u.enabled && st.fileState == "enabled" {
		p.disable = true
		det = append(det, "disable")
	}
	active := st.active == "active" || st.active == "activating" || st.active == "reloading"
	var triggers []string
	for _, f := range u.files {
		if u.changed[f] {
			triggers = append(triggers, f)
		}
	}
	switch {
	case u.running && active && (p.writeFile || len(triggers) > 0):
		p.restart = true
		if len(triggers) > 0 {
			det = append(det, "restart: "+strings.Join(triggers, ", ")+" changed")
		} else {
			det = append(det, "restart")
		}
	case u.running && !active:
		p.start = true
		det = append(det, "start (is "+st.active+")")
	case !u.running && active:
		p.stop = true
		det = append(det, "stop")
	}
	if len(det) == 0 {
		return nil, nil
	}
	c := &Change{Action: Update, Details: det, Disruptive: u.disruptive && (p.restart || p.stop || p.start && st.active != "inactive")}
	c.unit = p
	if p.restart && !p.writeFile && !p.enable && !p.disable {
		c.Action = Restart
	}
	if st.load == "not-found" {
		c.Action = Create
	}
	return c, nil
}

func (u *unitRes) apply(ctx context.Context, sys *System, c *Change) error {
	p := c.unit
	var old []byte
	wrote := false
	if u.content != nil {
		var err error
		old, err = os.ReadFile(sys.Path(u.path()))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if string(old) != string(u.content) {
			if err := writeAtomic(sys.Path(u.path()), u.content, 0o644, -1, -1); err != nil {
				return err
			}
			wrote = true
			if _, err := sys.run(ctx, "systemctl", "daemon-reload"); err != nil {
				return err
			}
		}
	}
	if p.enable {
		if _, err := sys.run(ctx, "systemctl", "enable", u.name); err != nil {
			return err
		}
	}
	if p.disable {
		if _, err := sys.run(ctx, "systemctl", "disable", u.name); err != nil {
			return err
		}
	}
	var verb string
	switch {
	case p.restart:
		verb = "restart"
	case p.start:
		verb = "start"
	case p.stop:
		_, err := sys.run(ctx, "systemctl", "stop", u.name)
		return err
	default:
		return nil
	}
	err := u.startAndCheck(ctx, sys, verb)
	if err == nil {
		return nil
	}
	if !wrote {
		return err
	}
	// Put the unit that worked back, so the service keeps running.
	if old == nil {
		os.Remove(sys.Path(u.path()))
	} else if werr := writeAtomic(sys.Path(u.path()), old, 0o644, -1, -1); werr != nil {
		return fmt.Errorf("%w; restoring the previous unit file failed too: %v", err, werr)
	}
	sys.run(ctx, "systemctl", "daemon-reload")
	if old != nil {
		sys.run(ctx, "systemctl", "restart", u.name)
		return withHint(fmt.Errorf("%w; the previous unit file was restored and restarted", err), "fix the unit in git; journalctl -u "+u.name+" on the machine has the details")
	}
	return withHint(fmt.Errorf("%w; the new unit file was removed", err), "fix the unit in git; journalctl -u "+u.name+" on the machine has the details")
}

// startAndCheck starts or restarts the unit and waits until it has stayed
// active for the settle time, or failed.
func (u *unitRes) startAndCheck(ctx context.Context, sys *System, verb string) error {
	if _, err := sys.run(ctx, "systemctl", verb, u.name); err != nil {
		return fmt.Errorf("%s %s: %w%s", verb, u.name, err, u.journal(ctx, sys))
	}
	settle := u.settle
	if settle == 0 {
		settle = time.Second
	}
	deadline := time.Now().Add(30 * time.Second)
	var activeSince time.Time
	for time.Now().Before(deadline) {
		st, err := u.show(ctx, sys)
		if err != nil {
			return err
		}
		switch st.active {
		case "active":
			if activeSince.IsZero() {
				activeSince = time.Now()
			}
			if time.Since(activeSince) >= settle {
				return nil
			}
		case "failed", "inactive":
			return fmt.Errorf("%s did not start (%s)%s", u.name, st.active, u.journal(ctx, sys))
		default:
			activeSince = time.Time{}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not become active in 30 s%s", u.name, u.journal(ctx, sys))
}

func (u *unitRes) journal(ctx context.Context, sys *System) string {
	out, err := sys.run(ctx, "journalctl", "-u", u.name, "-n", "3", "--no-pager", "-o", "cat")
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return ""
	}
	return ": " + lastLines(string(out), 3)
}
