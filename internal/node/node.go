// Package node is the agent that runs on every machine of a pool (`tend
// node run`). It fetches the ops repository, picks out its own machine,
// plans, applies only what differs, takes a rollout slot for disruptive
// changes, and writes a status file that `tend node status` and `tend
// machines status` read.
package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/machine"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/rollout"
	"tend.dev/tend/internal/secret/unseal"
	"tend.dev/tend/internal/source"
)

// Config is /etc/tend/node.yaml, written by `tend bootstrap machines`.
type Config struct {
	// Repo is the ops repository URL, without credentials.
	Repo string `yaml:"repo" json:"repo"`
	// Ref to follow (default: the remote's default branch).
	Ref string `yaml:"ref,omitempty" json:"ref,omitempty"`
	// Pool and Machine name this machine's entry.
	Pool    string `yaml:"pool" json:"pool"`
	Machine string `yaml:"machine" json:"machine"`
	// CredentialFile holds a read-only git credential: "user:token" or a token.
	CredentialFile string `yaml:"credentialFile,omitempty" json:"credentialFile,omitempty"`
	// SSHKeyFile and KnownHostsFile are for ssh:// repositories.
	SSHKeyFile     string `yaml:"sshKeyFile,omitempty" json:"sshKeyFile,omitempty"`
	KnownHostsFile string `yaml:"knownHostsFile,omitempty" json:"knownHostsFile,omitempty"`
	// AgeIdentityFile decrypts the pool's secret files.
	AgeIdentityFile string `yaml:"ageIdentityFile,omitempty" json:"ageIdentityFile,omitempty"`
	// SlotKeyFile is the key this machine takes rollout slots with.
	SlotKeyFile string `yaml:"slotKeyFile,omitempty" json:"slotKeyFile,omitempty"`
	// StateDir holds the status file and the checkout (default /var/lib/tend/node).
	StateDir string `yaml:"stateDir,omitempty" json:"stateDir,omitempty"`
	// Interval overrides the pool's interval.
	Interval string `yaml:"interval,omitempty" json:"interval,omitempty"`
}

// DefaultConfig is where bootstrap writes the config.
const DefaultConfig = "/etc/tend/node.yaml"

// LoadConfig reads a config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("read node config: %w", err), "run `tend bootstrap machines` to install the agent, or pass --config")
	}
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, model.WithHint(fmt.Errorf("%s: %w", path, err), "the file is written by tend bootstrap machines; re-run it")
	}
	if c.Repo == "" || c.Pool == "" || c.Machine == "" {
		return nil, model.WithHint(fmt.Errorf("%s: repo, pool and machine are required", path), "re-run tend bootstrap machines")
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/tend/node"
	}
	return &c, nil
}

// Status is what the agent last did; it is written to StateDir/status.json.
type Status struct {
	Machine  string    `json:"machine"`
	Pool     string    `json:"pool"`
	Revision string    `json:"revision,omitempty"`
	Time     time.Time `json:"time"`
	Duration string    `json:"duration"`
	// InSync is true when the machine matched git after the run.
	InSync    bool `json:"inSync"`
	Resources int  `json:"resources"`
	// Changed are the changes this run made: new revisions and drift put back.
	Changed []machine.Result `json:"changed,omitempty"`
	// Failing are resources that could not be planned or applied.
	Failing []machine.ResourceError `json:"failing,omitempty"`
	// Pending are disruptive changes waiting for a rollout slot.
	Pending []string `json:"pending,omitempty"`
	// Slot says whether this machine holds a rollout slot, and why.
	Slot           string `json:"slot,omitempty"`
	RebootRequired bool   `json:"rebootRequired,omitempty"`
	// LastError is a run-level error: git unreachable, the pool invalid.
	LastError string `json:"lastError,omitempty"`
	LastHint  string `json:"lastHint,omitempty"`
	Version   string `json:"version,omitempty"`
	// Processes and PackageManagerRuns count the commands the run started:
	// a run with nothing to change starts no package manager.
	Processes          int64 `json:"processes"`
	PackageManagerRuns int64 `json:"packageManagerRuns"`
	// Backups are the machine's Backups: the last run, drill and the next.
	Backups []BackupStatus `json:"backups,omitempty"`
}

// StatusFile is the status path under a state dir.
func StatusFile(stateDir string) string { return filepath.Join(stateDir, "status.json") }

// ReadStatus reads the status file.
func ReadStatus(stateDir string) (*Status, error) {
	b, err := os.ReadFile(StatusFile(stateDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, model.WithHint(fmt.Errorf("no status yet in %s", stateDir), "the agent writes it after its first run: systemctl status tend-node")
		}
		return nil, err
	}
	var s Status
	return &s, json.Unmarshal(b, &s)
}

func writeStatus(stateDir string, s *Status) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	tmp := StatusFile(stateDir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, StatusFile(stateDir))
}

// Slots is how the agent takes rollout slots: the local store on the
// coordinator, SSH to it elsewhere.
type Slots interface {
	Acquire(ctx context.Context, max int, reason string) (rollout.Grant, error)
	Note(ctx context.Context, reason string) error
	Release(ctx context.Context) error
}

// Agent converges one machine.
type Agent struct {
	Config  *Config
	Sys     *machine.System
	Version string
	// Slots defaults to the pool's coordinator (see NewSlots).
	Slots func(p *model.MachinePool) (Slots, error)
	// Reboot runs when a change needs a reboot and the pool allows it.
	Reboot func(ctx context.Context) error
	// Restic is the restic binary backups run (default restic from PATH).
	Restic string
	// OnBackup is told of every backup and drill the agent runs.
	OnBackup func(b *model.Backup, run backup.Run)

	bk backups

	src        source.Source
	managedRaw []byte // managed.json as this run read it
	lastDir    string
	lastRev    string
	interval   time.Duration
}

// held is the agent's own record that it holds a slot: it survives a
// restart or a reboot in the middle of a rollout.
func (a *Agent) heldFile() string { return filepath.Join(a.Config.StateDir, "slot-held") }

func (a *Agent) source() (source.Source, error) {
	if a.src != nil {
		return a.src, nil
	}
	o := source.Options{Ref: a.Config.Ref, SSHKeyFile: a.Config.SSHKeyFile, KnownHostsFile: a.Config.KnownHostsFile,
		CacheDir: filepath.Join(a.Config.StateDir, "git")}
	if a.Config.CredentialFile != "" {
		b, err := os.ReadFile(a.Config.CredentialFile)
		if err != nil {
			return nil, fmt.Errorf("read git credential: %w", err)
		}
		cred := strings.TrimSpace(string(b))
		if u, p, ok := strings.Cut(cred, ":"); ok {
			o.Username, o.Password = u, p
		} else {
			o.Token = cred
		}
	}
	src, err := source.Open(a.Config.Repo, o)
	if err != nil {
		return nil, err
	}
	a.src = src
	return src, nil
}

// Prepared is a compiled machine at a revision, ready to plan.
type Prepared struct {
	Pool     *model.MachinePool
	Machine  *model.Machine
	Desired  *machine.Desired
	Revision string
	// FetchErr says git could not be reached: Revision is the last one
	// fetched, and drift against it is still corrected.
	FetchErr error
	// Root is the checkout; Backups are those that run on this machine.
	Root       string
	Backups    []*model.Backup
	identities *unseal.Identities
}

// Prepare fetches the repository and compiles this machine's state. When
// git cannot be reached it goes on with the last revision it had, and says
// so in FetchErr; an error means there is nothing to apply.
func (a *Agent) Prepare(ctx context.Context) (*Prepared, error) {
	var fetchErr error
	dir, rev := a.lastDir, a.lastRev
	src, err := a.source()
	if err == nil {
		var r source.Revision
		if r, err = src.Resolve(ctx); err == nil {
			var d string
			if d, err = src.Checkout(ctx, r); err == nil {
				dir, rev = d, r.String()
				a.lastDir, a.lastRev = dir, rev
			}
		}
	}
	if err != nil {
		fetchErr = fmt.Errorf("fetch %s: %w", a.Config.Repo, err)
		if dir == "" {
			return nil, fetchErr
		}
	}
	// A fatal error on a stale revision says both.
	fail := func(err error) (*Prepared, error) { return nil, errors.Join(err, fetchErr) }
	repo, lerr := model.Load(dir)
	pool, err := repo.MachinePool(a.Config.Pool)
	if err != nil {
		if lerr != nil {
			return fail(lerr)
		}
		return fail(err)
	}
	m, err := pool.Machine(a.Config.Machine)
	if err != nil {
		return fail(err)
	}
	ids := &unseal.Identities{}
	if a.Config.AgeIdentityFile != "" {
		if _, err := ids.LoadFile(a.Config.AgeIdentityFile); err != nil {
			return fail(err)
		}
	}
	backups := repo.BackupsFor(pool.Metadata.Name, m.Name)
	if len(backups) > 0 {
		m = withRestic(pool, m)
	}
	d, err := machine.Compile(pool, m, machine.Options{Root: dir, Identities: ids, Facts: machine.GatherFacts(a.Sys), StateDir: a.Config.StateDir})
	if err != nil {
		return fail(err)
	}
	d.Prune(a.managed())
	return &Prepared{Pool: pool, Machine: m, Desired: d, Revision: rev, FetchErr: fetchErr, Root: dir, Backups: backups, identities: ids}, nil
}

// withRestic returns m with Debian's restic package in its state, unless
// the pool or the machine already declares it: a machine with backups
// needs restic, and installing it is the same apt path as every package.
func withRestic(p *model.MachinePool, m *model.Machine) *model.Machine {
	for _, pkg := range p.StateFor(m).Packages {
		if pkg.Name == "restic" {
			return m
		}
	}
	c := *m
	c.State.Packages = append(append([]model.Package(nil), m.State.Packages...), model.Package{Name: "restic"})
	return &c
}

// Plan returns what the next apply would change, without changing anything.
func (a *Agent) Plan(ctx context.Context) (*Prepared, *machine.Plan, error) {
	p, err := a.Prepare(ctx)
	if err != nil {
		return nil, nil, err
	}
	if p.FetchErr != nil {
		return nil, nil, p.FetchErr
	}
	return p, machine.PlanState(ctx, a.Sys, p.Desired), nil
}

// Once runs one converge and writes the status file.
func (a *Agent) Once(ctx context.Context) *Status {
	start := time.Now()
	st := &Status{Machine: a.Config.Machine, Pool: a.Config.Pool, Time: start.UTC(), Version: a.Version}
	execs0, pm0 := a.Sys.Execs()
	defer func() {
		execs, pm := a.Sys.Execs()
		st.Processes, st.PackageManagerRuns = execs-execs0, pm-pm0
		st.Duration = time.Since(start).Round(time.Millisecond).String()
		writeStatus(a.Config.StateDir, st) //nolint:errcheck // the next run writes it again
	}()
	p, err := a.Prepare(ctx)
	if err != nil {
		st.LastError, st.LastHint = err.Error(), model.HintOf(err)
		return st
	}
	if p.FetchErr != nil {
		st.LastError, st.LastHint = p.FetchErr.Error(), "the agent keeps applying the last revision it fetched"
	}
	st.Revision, st.Resources = p.Revision, p.Desired.Len()
	a.interval = p.Pool.Spec.IntervalOrDefault()
	a.setBackups(p)
	defer func() { st.Backups = a.backupStatus(p) }()

	slots, serr := a.slots(p.Pool)
	held := a.holdsSlot()
	if held {
		st.Slot = "held"
	}
	plan := machine.PlanState(ctx, a.Sys, p.Desired)
	st.Failing = append(st.Failing, plan.Errors...)
	// A new revision's changes wait for their backupBefore backup.
	// The first run, which installs restic, has nothing to back up with.
	if len(plan.Changes) > 0 && p.Pool.StateFor(p.Machine).BackupBefore != "" && a.haveRestic() {
		if err := a.backupBefore(ctx, p); err != nil {
			st.Failing = append(st.Failing, machine.ResourceError{Resource: "backup " + p.Pool.StateFor(p.Machine).BackupBefore, Error: err.Error(), Hint: model.HintOf(err)})
			for _, c := range plan.Changes {
				st.Pending = append(st.Pending, c.String())
			}
			st.InSync = false
			return st
		}
	}
	// A reboot still owed for an earlier change takes a slot too, once the
	// pool allows reboots.
	rebootOwed := a.rebootPending() && p.Pool.Spec.Rollout.Reboot && a.Reboot != nil

	// Disruptive changes wait for a slot; so do the files whose change
	// would restart a disruptive unit.
	keep := func(machine.Change) bool { return true }
	if (plan.Disruptive() || rebootOwed) && !held {
		if serr != nil {
			keep = nonDisruptive(plan)
			st.Slot = "unavailable: " + serr.Error()
		} else if g, err := slots.Acquire(ctx, p.Pool.Spec.Rollout.MaxUnavailableOrDefault(), slotReason(plan)); err != nil {
			keep = nonDisruptive(plan)
			st.Slot = "unavailable: " + err.Error()
		} else if !g.Granted {
			keep = nonDisruptive(plan)
			st.Slot = "waiting: " + describeHolders(g.Holders)
		} else {
			held = true
			a.markHeld(true)
			st.Slot = "held"
		}
	}
	for _, c := range plan.Changes {
		if !keep(c) {
			st.Pending = append(st.Pending, c.String())
		}
	}
	results := machine.Apply(ctx, a.Sys, plan, keep)
	disruptiveFailed := false
	for _, r := range results {
		if r.Error != "" {
			st.Failing = append(st.Failing, machine.ResourceError{Resource: r.Resource, Error: r.Error, Hint: r.Hint})
			if r.Disruptive {
				disruptiveFailed = true
			}
		} else {
			st.Changed = append(st.Changed, r)
			if r.Reboot {
				a.markReboot()
			}
		}
	}
	a.writeManaged(p.Desired.Managed(results))
	// Until the machine boots again, a change that needs a reboot is not
	// in effect: status says so on every run, not just the one that
	// applied it.
	st.RebootRequired = a.rebootPending()
	if held {
		a.finishSlot(ctx, p, slots, st, disruptiveFailed)
	}
	st.InSync = len(st.Failing) == 0 && len(st.Pending) == 0 && p.FetchErr == nil && !st.RebootRequired
	return st
}

// finishSlot releases the slot once the machine is healthy, and keeps it,
// with the reason, when it is not.
func (a *Agent) finishSlot(ctx context.Context, p *Prepared, slots Slots, st *Status, failed bool) {
	if slots == nil {
		return
	}
	// hold keeps the slot, saying why on the coordinator and in status.
	hold := func(reason string, fail *machine.ResourceError) {
		slots.Note(ctx, reason)
		st.Slot = "held: " + reason
		if fail != nil {
			st.Failing = append(st.Failing, *fail)
		}
	}
	if failed {
		hold("apply failed: "+st.Failing[len(st.Failing)-1].Resource, nil)
		return
	}
	if st.RebootRequired && p.Pool.Spec.Rollout.Reboot && a.Reboot != nil {
		hold("rebooting", nil)
		err := a.Reboot(ctx)
		if err == nil {
			return // health is checked after the reboot, still holding the slot
		}
		hold("reboot failed: "+err.Error(), &machine.ResourceError{Resource: "reboot", Error: err.Error(),
			Hint: "the machine keeps its rollout slot; reboot it by hand, or free the slot with tend machines release"})
		return
	}
	if err := Health(ctx, p.Pool.Spec.Rollout); err != nil {
		hold("health check failed: "+err.Error(), &machine.ResourceError{Resource: "health", Error: err.Error(),
			Hint: "the machine keeps its rollout slot, so no other machine starts a disruptive change; fix the cause, or free the slot with tend machines release"})
		return
	}
	if err := slots.Release(ctx); err != nil {
		st.Slot = "held: release failed: " + err.Error()
		return
	}
	a.markHeld(false)
	st.Slot = ""
}

// managedFile lists what the agent manages, so that what leaves git is
// pruned on the next run.
func (a *Agent) managedFile() string { return filepath.Join(a.Config.StateDir, "managed.json") }

func (a *Agent) managed() []string {
	var keys []string
	a.managedRaw, _ = os.ReadFile(a.managedFile())
	json.Unmarshal(a.managedRaw, &keys) //nolint:errcheck // an unreadable record prunes nothing
	return keys
}

// writeManaged records keys, unless they are what the run read: an idle
// run writes nothing it does not have to.
func (a *Agent) writeManaged(keys []string) {
	b, _ := json.MarshalIndent(keys, "", "  ")
	if bytes.Equal(a.managedRaw, b) {
		return
	}
	os.MkdirAll(a.Config.StateDir, 0o700)
	tmp := a.managedFile() + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil && os.Rename(tmp, a.managedFile()) == nil {
		a.managedRaw = b
	}
}

// rebootFile records that a change needs a reboot, with the boot it was
// applied in: the kernel's boot ID changes on every boot (systemd-nspawn
// gives each container boot its own), so a reboot clears it.
func (a *Agent) rebootFile() string { return filepath.Join(a.Config.StateDir, "reboot-required") }

func (a *Agent) bootID() string {
	b, _ := os.ReadFile(a.Sys.Path("/proc/sys/kernel/random/boot_id"))
	return strings.TrimSpace(string(b))
}

func (a *Agent) markReboot() {
	os.MkdirAll(a.Config.StateDir, 0o700)
	os.WriteFile(a.rebootFile(), []byte(a.bootID()+"\n"), 0o600)
}

// rebootPending reports whether a change waits for a reboot; it forgets
// one the machine has booted since.
func (a *Agent) rebootPending() bool {
	b, err := os.ReadFile(a.rebootFile())
	if err != nil {
		return false
	}
	if id := a.bootID(); id != "" && strings.TrimSpace(string(b)) != id {
		os.Remove(a.rebootFile())
		return false
	}
	return true
}

func (a *Agent) holdsSlot() bool {
	_, err := os.Stat(a.heldFile())
	return err == nil
}

func (a *Agent) markHeld(h bool) {
	if h {
		os.MkdirAll(a.Config.StateDir, 0o700)
		os.WriteFile(a.heldFile(), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600)
		return
	}
	os.Remove(a.heldFile())
}

func (a *Agent) slots(p *model.MachinePool) (Slots, error) {
	if a.Slots != nil {
		return a.Slots(p)
	}
	return NewSlots(p, a.Config)
}

func nonDisruptive(p *machine.Plan) func(machine.Change) bool {
	// Files that would restart a disruptive unit wait with it.
	held := map[string]bool{}
	for _, c := range p.Changes {
		if c.Disruptive {
			for _, f := range machine.RestartFiles(c) {
				held["file "+f] = true
			}
		}
	}
	return func(c machine.Change) bool { return !c.Disruptive && !held[c.Resource] }
}

func slotReason(p *machine.Plan) string {
	if s := summary(p); s != "" {
		return "applying " + s
	}
	return "rebooting for a change applied earlier"
}

func summary(p *machine.Plan) string {
	var parts []string
	for _, c := range p.Changes {
		if c.Disruptive {
			parts = append(parts, c.String())
		}
	}
	return strings.Join(parts, ", ")
}

func describeHolders(hs []rollout.Holder) string {
	var parts []string
	for _, h := range hs {
		s := h.Machine
		if h.Reason != "" {
			s += " (" + h.Reason + ")"
		}
		parts = append(parts, s)
	}
	return "slots held by " + strings.Join(parts, ", ")
}

// Health runs the pool's health checks until they pass or the timeout.
func Health(ctx context.Context, r model.Rollout) error {
	if len(r.Health) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.HealthTimeoutOrDefault())
	defer cancel()
	var last error
	for {
		last = healthOnce(ctx, r.Health)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(time.Second):
		}
	}
}

func healthOnce(ctx context.Context, checks []model.HealthCheck) error {
	for _, h := range checks {
		if h.Command != "" {
			sys := machine.Host()
			if _, err := machine.Shell(ctx, sys, h.Command); err != nil {
				return fmt.Errorf("%s: %w", h.Command, err)
			}
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.HTTP, nil)
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("%s: %w", h.HTTP, err)
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("%s answered %s", h.HTTP, resp.Status)
		}
	}
	return nil
}

// Run converges every interval until ctx ends, calling report after each run.
func (a *Agent) Run(ctx context.Context, report func(*Status)) {
	a.bk.wake, a.bk.started = make(chan struct{}, 1), time.Now()
	go a.backupLoop(ctx)
	for {
		st := a.Once(ctx)
		if report != nil {
			report(st)
		}
		interval := a.interval
		if d, err := time.ParseDuration(a.Config.Interval); err == nil && d > 0 {
			interval = d
		}
		if interval <= 0 {
			interval = time.Minute
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
