// Package machine keeps one machine in the state a MachinePool gives it:
// packages, files, directories, symlinks, systemd units, sysctls, kernel
// modules, users and groups, the nftables ruleset, the hostname and swap.
//
// It works in two steps, like the Kubernetes engine. Plan observes the
// machine (reads only) and returns the changes apply would make; Apply
// makes exactly those. Every resource is idempotent: a second Apply finds
// nothing to do, and a no-op plan starts no package manager. Libraries
// return data; the node agent decides what to log.
package machine

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync/atomic"

	"tend.dev/tend/internal/model"
)

// Action is what a change does.
type Action string

// Actions.
const (
	Create  Action = "create"
	Update  Action = "update"
	Delete  Action = "delete"
	Restart Action = "restart"
)

// Change is one difference between the machine and its desired state.
type Change struct {
	// Resource names it: "file /etc/motd", "package nginx", "unit web.service".
	Resource string `json:"resource"`
	Action   Action `json:"action"`
	// Details say what differs, one line each; a secret's content never appears.
	Details []string `json:"details,omitempty"`
	// Disruptive changes take a rollout slot: a firewall change, the restart
	// of a unit marked disruptive, a change that needs a reboot.
	Disruptive bool `json:"disruptive,omitempty"`
	// Reboot says the change takes effect only after a reboot.
	Reboot bool `json:"reboot,omitempty"`

	res  resource
	unit unitPlan // what a unit change does, decided in plan
}

func (c Change) String() string {
	return fmt.Sprintf("%s %s", c.Action, c.Resource)
}

// Plan is what Apply would change, in apply order.
type Plan struct {
	Changes []Change `json:"changes"`
	// Resources is how many resources were checked.
	Resources int `json:"resources"`
	// Errors are resources that could not be planned (a bad ruleset, an
	// unreadable file); their changes are left out, the others go ahead.
	Errors []ResourceError `json:"errors,omitempty"`
}

// ResourceError is a resource that failed to plan or apply.
type ResourceError struct {
	Resource string `json:"resource"`
	Error    string `json:"error"`
	Hint     string `json:"hint,omitempty"`
}

// Disruptive reports whether any change needs a rollout slot.
func (p *Plan) Disruptive() bool {
	for _, c := range p.Changes {
		if c.Disruptive {
			return true
		}
	}
	return false
}

// System is the machine resources act on. Root prefixes every path (it is
// "/" on a real machine); Exec runs a command and is counted, so tests and
// benchmarks can see how many processes a converge started.
type System struct {
	Root string
	// Exec runs a command; nil runs it with os/exec.
	Exec func(ctx context.Context, name string, args ...string) ([]byte, error)

	execs   atomic.Int64
	pkgMgrs atomic.Int64
}

// Host is the machine tend runs on.
func Host() *System { return &System{Root: "/"} }

// Path returns p under Root.
func (s *System) Path(p string) string { return filepath.Join(s.Root, p) }

// Execs returns how many commands ran, and how many of them were package managers.
func (s *System) Execs() (all, packageManagers int64) { return s.execs.Load(), s.pkgMgrs.Load() }

func (s *System) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	s.execs.Add(1)
	switch filepath.Base(name) {
	case "apt-get", "apt", "dpkg", "dpkg-query", "apt-mark", "dnf", "rpm":
		s.pkgMgrs.Add(1)
	}
	if s.Exec != nil {
		return s.Exec(ctx, name, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, &ExecError{Cmd: name, Args: args, Out: string(out), Err: err}
	}
	return out, nil
}

// ExecError is a command that failed, with its output.
type ExecError struct {
	Cmd  string
	Args []string
	Out  string
	Err  error
}

func (e *ExecError) Error() string {
	out := lastLines(e.Out, 6)
	if out == "" {
		return fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Cmd, e.Err, out)
}

func (e *ExecError) Unwrap() error { return e.Err }

// resource is one managed thing. plan observes (reads only) and compares;
// apply makes the change plan found.
type resource interface {
	key() string
	plan(ctx context.Context, sys *System) (*Change, error)
	apply(ctx context.Context, sys *System, c *Change) error
}

// PlanState observes the machine and returns what applying st would change.
func PlanState(ctx context.Context, sys *System, st *Desired) *Plan {
	p := &Plan{Resources: st.Len()}
	st.pkgs = pkgCache{}
	clear(st.changed)
	for _, r := range st.resources {
		c, err := r.plan(ctx, sys)
		if err != nil {
			p.Errors = append(p.Errors, resourceError(r.key(), err))
			continue
		}
		if c != nil {
			c.Resource, c.res = r.key(), r
			p.Changes = append(p.Changes, *c)
			if f, ok := r.(*fileRes); ok {
				st.changed[f.path] = true // units that declare it restart
			}
		}
	}
	return p
}

// Result is what Apply did to one resource.
type Result struct {
	Change
	Error string `json:"error,omitempty"`
	Hint  string `json:"hint,omitempty"`
}

// Apply makes the changes of p in order, only those keep says yes to
// (nil keeps all). A failed change does not stop the others, except that a
// unit whose configuration failed to change is not restarted.
func Apply(ctx context.Context, sys *System, p *Plan, keep func(Change) bool) []Result {
	var out []Result
	failed := map[string]bool{}
	var kept []*Change
	for i := range p.Changes {
		if keep == nil || keep(p.Changes[i]) {
			kept = append(kept, &p.Changes[i])
		}
	}
	installed := installBatch(ctx, sys, kept)
	for _, c := range kept {
		if installed[c.Resource] {
			out = append(out, Result{Change: *c})
			continue
		}
		if u, ok := c.res.(*unitRes); ok && c.Action == Restart && u.dependsOnFailed(failed) {
			out = append(out, Result{Change: *c, Error: "not restarted: a file it depends on failed to change"})
			continue
		}
		r := Result{Change: *c}
		if err := c.res.apply(ctx, sys, c); err != nil {
			e := resourceError(c.Resource, err)
			r.Error, r.Hint = e.Error, e.Hint
			failed[c.Resource] = true
		}
		out = append(out, r)
	}
	return out
}

func resourceError(key string, err error) ResourceError {
	return ResourceError{Resource: key, Error: err.Error(), Hint: model.HintOf(err)}
}

func withHint(err error, hint string) error { return model.WithHint(err, "%s", hint) }

// RestartFiles lists the files whose change restarts the unit of c.
func RestartFiles(c Change) []string {
	if u, ok := c.res.(*unitRes); ok {
		return append([]string{u.path()}, u.files...)
	}
	return nil
}

// Shell runs command with /bin/sh -c, for health checks.
func Shell(ctx context.Context, sys *System, command string) ([]byte, error) {
	return sys.run(ctx, "/bin/sh", "-c", command)
}
