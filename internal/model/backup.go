package model

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/labels"
)

// KindBackup is a backup kept by the targets themselves.
const KindBackup = "Backup"

// Backup is data tend backs up on a schedule, to an S3 bucket, in a restic
// repository: paths and command output on machines of a pool (each node
// agent backs up its own machine), or Kubernetes objects of a cluster (the
// cluster's leader agent backs them up). Restores are drilled on the
// verify schedule.
type Backup struct {
	APIVersion string     `json:"apiVersion" yaml:"apiVersion" jsonschema:"required,enum=tend.dev/v1alpha1"`
	Kind       string     `json:"kind" yaml:"kind" jsonschema:"required,enum=Backup"`
	Metadata   ObjectMeta `json:"metadata" yaml:"metadata" jsonschema:"required"`
	Spec       BackupSpec `json:"spec" yaml:"spec" jsonschema:"required"`

	Origin Origin `json:"-" yaml:"-"`
}

// BackupSpec says what is backed up, where to, when, and for how long.
type BackupSpec struct {
	// Machines backs up paths and command output on machines of a pool.
	// Exactly one of machines and cluster.
	Machines *MachineBackup `json:"machines,omitempty" yaml:"machines,omitempty"`
	// Cluster backs up Kubernetes objects of a cluster as manifests.
	Cluster *ClusterBackup `json:"cluster,omitempty" yaml:"cluster,omitempty"`
	// Repository is where the snapshots go.
	Repository BackupRepository `json:"repository" yaml:"repository" jsonschema:"required"`
	// Schedule is when a backup runs.
	Schedule Schedule `json:"schedule" yaml:"schedule" jsonschema:"required"`
	// Keep is the retention policy, applied after every successful backup.
	// At least one count must be set: a policy that keeps nothing is refused.
	Keep Retention `json:"keep" yaml:"keep" jsonschema:"required"`
	// Verify restores the latest snapshot into a scratch place on its own
	// schedule and checks it. A failed drill is reported like a failed backup.
	Verify *Verify `json:"verify,omitempty" yaml:"verify,omitempty"`
	// Notify receives a JSON event (or a Slack message) when a backup or a
	// drill fails, from the target where it failed.
	Notify []NotifyTarget `json:"notify,omitempty" yaml:"notify,omitempty"`
}

// NotifyTarget is a webhook.
type NotifyTarget struct {
	URL string `json:"url" yaml:"url" jsonschema:"required"`
	// Slack posts {"text": …} to a Slack-compatible incoming webhook.
	Slack bool `json:"slack,omitempty" yaml:"slack,omitempty"`
}

// MachineBackup is what a node agent backs up on its own machine.
type MachineBackup struct {
	// Pool is the MachinePool whose machines are backed up.
	Pool string `json:"pool" yaml:"pool" jsonschema:"required"`
	// Machines limits the backup to these machines of the pool (default all).
	Machines []string `json:"machines,omitempty" yaml:"machines,omitempty"`
	// Paths are absolute paths (files or directories) on the machine.
	Paths []string `json:"paths,omitempty" yaml:"paths,omitempty"`
	// Exclude are restic exclude patterns, e.g. "*.tmp" or "/srv/app/cache".
	Exclude []string `json:"exclude,omitempty" yaml:"exclude,omitempty"`
	// Command backs up the output of a command (a database dump), with the
	// command that restores it.
	Command *DumpCommand `json:"command,omitempty" yaml:"command,omitempty"`
}

// DumpCommand is a dump and its restore, each run with /bin/sh -c.
type DumpCommand struct {
	// Dump writes the backup to its standard output, e.g. "pg_dump -Fc shop".
	// A dump that exits non-zero or writes nothing is not kept.
	Dump string `json:"dump" yaml:"dump" jsonschema:"required"`
	// Restore reads the dump on its standard input, e.g.
	// "pg_restore --clean --if-exists -d shop".
	Restore string `json:"restore" yaml:"restore" jsonschema:"required"`
	// User runs both commands (default root), e.g. postgres.
	User string `json:"user,omitempty" yaml:"user,omitempty"`
	// Filename is the dump's name in the snapshot (default NAME.dump).
	Filename string `json:"filename,omitempty" yaml:"filename,omitempty"`
}

// ClusterBackup is what a cluster's leader agent backs up.
type ClusterBackup struct {
	// Name is the Cluster's metadata.name.
	Name string `json:"name" yaml:"name" jsonschema:"required"`
	// Namespaces whose objects are backed up, with the Namespaces themselves.
	Namespaces []string `json:"namespaces" yaml:"namespaces" jsonschema:"required"`
	// Selector is a label selector ("app=shop,tier!=cache"); default every object.
	Selector string `json:"selector,omitempty" yaml:"selector,omitempty"`
}

// BackupRepository is a restic repository in an S3-compatible bucket.
type BackupRepository struct {
	S3 S3Location `json:"s3" yaml:"s3" jsonschema:"required"`
	// Credentials is a SOPS-encrypted YAML file in the ops repository with
	// accessKeyID, secretAccessKey and password (the restic repository's
	// encryption password). Only the targets that run the backup decrypt it.
	Credentials string `json:"credentials" yaml:"credentials" jsonschema:"required"`
}

// S3Location is a bucket and a prefix on an S3-compatible server.
type S3Location struct {
	// Endpoint is the server's URL, e.g. https://s3.eu-central-1.amazonaws.com.
	Endpoint string `json:"endpoint" yaml:"endpoint" jsonschema:"required"`
	// Bucket must exist: tend never creates buckets.
	Bucket string `json:"bucket" yaml:"bucket" jsonschema:"required"`
	// Prefix is the repository's path in the bucket (default the backup's name).
	Prefix string `json:"prefix,omitempty" yaml:"prefix,omitempty"`
	// Region (default us-east-1).
	Region string `json:"region,omitempty" yaml:"region,omitempty"`
}

// Schedule is a cron schedule in a time zone, with jitter.
type Schedule struct {
	// Cron has five fields ("30 2 * * *") or a descriptor (@daily, @hourly,
	// @every 6h).
	Cron string `json:"cron" yaml:"cron" jsonschema:"required"`
	// TimeZone is an IANA name such as Europe/Berlin (default UTC).
	TimeZone string `json:"timeZone,omitempty" yaml:"timeZone,omitempty"`
	// Jitter delays each target's run by a fixed amount between 0 and
	// Jitter, derived from the target's name, so that many machines don't
	// start at once.
	Jitter Duration `json:"jitter,omitempty" yaml:"jitter,omitempty"`
}

// Retention keeps the last N snapshots plus the newest of each of the last
// N hours, days, weeks, months and years, as restic's forget does.
type Retention struct {
	Last    int `json:"last,omitempty" yaml:"last,omitempty" jsonschema:"minimum=0"`
	Hourly  int `json:"hourly,omitempty" yaml:"hourly,omitempty" jsonschema:"minimum=0"`
	Daily   int `json:"daily,omitempty" yaml:"daily,omitempty" jsonschema:"minimum=0"`
	Weekly  int `json:"weekly,omitempty" yaml:"weekly,omitempty" jsonschema:"minimum=0"`
	Monthly int `json:"monthly,omitempty" yaml:"monthly,omitempty" jsonschema:"minimum=0"`
	Yearly  int `json:"yearly,omitempty" yaml:"yearly,omitempty" jsonschema:"minimum=0"`
}

// Empty reports whether the policy keeps nothing.
func (r Retention) Empty() bool {
	return r.Last <= 0 && r.Hourly <= 0 && r.Daily <= 0 && r.Weekly <= 0 && r.Monthly <= 0 && r.Yearly <= 0
}

// Verify is a restore drill. Paths are restored into a scratch directory
// and every file's content is checked against the snapshot's hashes. A
// command backup's dump is fed to Restore (a scratch database), then Query
// must print at least one row.
type Verify struct {
	Schedule Schedule `json:"schedule" yaml:"schedule" jsonschema:"required"`
	// Restore reads the dump on standard input into a scratch place, e.g.
	// "dropdb --if-exists verify && createdb verify && pg_restore -d verify".
	Restore string `json:"restore,omitempty" yaml:"restore,omitempty"`
	// Query must exit 0 and print at least one line, e.g.
	// "psql -d verify -tAc 'select id from orders limit 1'".
	Query string `json:"query,omitempty" yaml:"query,omitempty"`
	// Cleanup runs after the drill, whatever its result, e.g. "dropdb --if-exists verify".
	Cleanup string `json:"cleanup,omitempty" yaml:"cleanup,omitempty"`
}

// Targets returns the machines of pool p this backup runs on.
func (b *Backup) Targets(p *MachinePool) []string {
	if b.Spec.Machines == nil || p == nil || p.Metadata.Name != b.Spec.Machines.Pool {
		return nil
	}
	if len(b.Spec.Machines.Machines) > 0 {
		return b.Spec.Machines.Machines
	}
	var out []string
	for _, m := range p.Spec.Machines {
		out = append(out, m.Name)
	}
	return out
}

// RunsOn reports whether machine m of pool p runs this backup.
func (b *Backup) RunsOn(pool, m string) bool {
	mb := b.Spec.Machines
	if mb == nil || mb.Pool != pool {
		return false
	}
	if len(mb.Machines) == 0 {
		return true
	}
	for _, n := range mb.Machines {
		if n == m {
			return true
		}
	}
	return false
}

// DumpFilename is the dump's name in a snapshot.
func (b *Backup) DumpFilename() string {
	if c := b.Spec.Machines; c != nil && c.Command != nil && c.Command.Filename != "" {
		return c.Command.Filename
	}
	return b.Metadata.Name + ".dump"
}

// Prefix is the repository's path in the bucket.
func (b *Backup) Prefix() string {
	if p := strings.Trim(b.Spec.Repository.S3.Prefix, "/"); p != "" {
		return p
	}
	return b.Metadata.Name
}

// Location returns the schedule's time zone.
func (s Schedule) Location() (*time.Location, error) {
	if s.TimeZone == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(s.TimeZone)
}

// CronParser parses five-field schedules and descriptors, as the cron(8)
// users know them.
var CronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// BackupsFor returns the backups that run on machine m of pool.
func (r *Repo) BackupsFor(pool, m string) []*Backup {
	var out []*Backup
	for _, b := range r.Backups {
		if b.RunsOn(pool, m) {
			out = append(out, b)
		}
	}
	return out
}

// ClusterBackups returns the backups of cluster name.
func (r *Repo) ClusterBackups(name string) []*Backup {
	var out []*Backup
	for _, b := range r.Backups {
		if b.Spec.Cluster != nil && b.Spec.Cluster.Name == name {
			out = append(out, b)
		}
	}
	return out
}

// Backup returns the backup named name.
func (r *Repo) Backup(name string) (*Backup, error) {
	var names []string
	for _, b := range r.Backups {
		if b.Metadata.Name == name {
			return b, nil
		}
		names = append(names, b.Metadata.Name)
	}
	hint := "add a file with `kind: Backup` and `metadata.name: " + name + "` to the repository"
	if len(names) > 0 {
		hint = "the repository defines: " + strings.Join(names, ", ")
	}
	return nil, &Error{Msg: fmt.Sprintf("no Backup named %q in %s", name, r.Root), Hint: hint}
}

// validateBackup checks one Backup on its own; validateBackupRefs checks
// its references once the whole repository is loaded.
func validateBackup(b *Backup) Errors {
	var errs Errors
	add := func(msg, hint string) {
		errs = append(errs, &Error{Origin: b.Origin, Object: "Backup/" + b.Metadata.Name, Msg: msg, Hint: hint})
	}
	if !dnsLabel.MatchString(b.Metadata.Name) {
		add(fmt.Sprintf("metadata.name %q is not a DNS label", b.Metadata.Name), "use lower case letters, digits and '-'")
	}
	s := b.Spec
	switch {
	case (s.Machines == nil) == (s.Cluster == nil):
		add("set exactly one of spec.machines and spec.cluster", "a Backup backs up machines of a pool, or objects of a cluster; write two Backups for both")
	case s.Machines != nil:
		m := s.Machines
		if m.Pool == "" {
			add("spec.machines.pool is required", "name the MachinePool whose machines are backed up")
		}
		if len(m.Paths) == 0 && m.Command == nil {
			add("spec.machines needs paths or a command", "list absolute paths, or a command whose output is the backup (pg_dump …)")
		}
		if len(m.Paths) > 0 && m.Command != nil {
			add("spec.machines has both paths and a command", "write one Backup for the files and one for the dump: they restore differently")
		}
		for _, p := range m.Paths {
			if !path.IsAbs(p) || path.Clean(p) == "/" {
				add(fmt.Sprintf("path %q must be absolute and not /", p), "write the full path, e.g. /srv/app/data")
			}
		}
		if c := m.Command; c != nil {
			if strings.TrimSpace(c.Dump) == "" || strings.TrimSpace(c.Restore) == "" {
				add("spec.machines.command needs dump and restore", "e.g. dump: pg_dump -Fc shop, restore: pg_restore --clean --if-exists -d shop")
			}
			if strings.Contains(c.Filename, "/") {
				add(fmt.Sprintf("command.filename %q must be a plain name", c.Filename), "drop the directories, e.g. shop.dump")
			}
		}
	case s.Cluster != nil:
		if s.Cluster.Name == "" {
			add("spec.cluster.name is required", "name the Cluster whose objects are backed up")
		}
		if len(s.Cluster.Namespaces) == 0 {
			add("spec.cluster.namespaces is required", "list the namespaces whose objects are backed up")
		}
		for _, ns := range s.Cluster.Namespaces {
			if !dnsLabel.MatchString(ns) {
				add(fmt.Sprintf("namespace %q is not a DNS label", ns), "use the namespace's name")
			}
		}
		if sel := s.Cluster.Selector; sel != "" {
			if _, err := labels.Parse(sel); err != nil {
				add(fmt.Sprintf("selector %q: %v", sel, err), `write a label selector, e.g. "app=shop,tier!=cache"`)
			}
		}
	}
	r := s.Repository
	if r.S3.Endpoint == "" || r.S3.Bucket == "" {
		add("spec.repository.s3 needs endpoint and bucket", "e.g. endpoint: https://s3.example.com, bucket: backups")
	} else if !strings.HasPrefix(r.S3.Endpoint, "http://") && !strings.HasPrefix(r.S3.Endpoint, "https://") {
		add(fmt.Sprintf("s3.endpoint %q is not a URL", r.S3.Endpoint), "write https://host[:port]")
	}
	if r.Credentials == "" {
		add("spec.repository.credentials is required", "a SOPS file with accessKeyID, secretAccessKey and password: tend secret encrypt FILE")
	} else if path.IsAbs(r.Credentials) || strings.HasPrefix(path.Clean(r.Credentials), "..") {
		add(fmt.Sprintf("credentials %q leaves the repository", r.Credentials), "paths are relative to the repository root")
	}
	errs = append(errs, validateSchedule(b, "spec.schedule", s.Schedule)...)
	if s.Keep.Empty() {
		add("spec.keep keeps no snapshot: every backup would be deleted right after it is made",
			"set at least one of last, hourly, daily, weekly, monthly and yearly, e.g. keep: {last: 7, daily: 14}")
	}
	for _, n := range []int{s.Keep.Last, s.Keep.Hourly, s.Keep.Daily, s.Keep.Weekly, s.Keep.Monthly, s.Keep.Yearly} {
		if n < 0 {
			add("spec.keep counts cannot be negative", "use 0 or leave the count out")
			break
		}
	}
	if v := s.Verify; v != nil {
		errs = append(errs, validateSchedule(b, "spec.verify.schedule", v.Schedule)...)
		cmd := s.Machines != nil && s.Machines.Command != nil
		if cmd && (strings.TrimSpace(v.Restore) == "" || strings.TrimSpace(v.Query) == "") {
			add("spec.verify needs restore and query for a command backup",
				"restore the dump into a scratch database and query it, e.g. restore: createdb verify && pg_restore -d verify, query: psql -d verify -tAc 'select 1 from orders limit 1'")
		}
		if !cmd && (v.Restore != "" || v.Query != "") {
			add("spec.verify.restore and query are for command backups", "files are checked against the snapshot's hashes; drop restore and query")
		}
	}
	return errs
}

func validateSchedule(b *Backup, where string, s Schedule) Errors {
	var errs Errors
	add := func(msg, hint string) {
		errs = append(errs, &Error{Origin: b.Origin, Object: "Backup/" + b.Metadata.Name, Msg: msg, Hint: hint})
	}
	if strings.TrimSpace(s.Cron) == "" {
		add(where+".cron is required", `e.g. cron: "30 2 * * *" (02:30 every day) or "@hourly"`)
	} else if _, err := CronParser.Parse(s.Cron); err != nil {
		add(fmt.Sprintf("%s.cron %q: %v", where, s.Cron, err), `five fields: minute hour day-of-month month day-of-week, e.g. "30 2 * * *"; or @daily, @every 6h`)
	}
	if s.TimeZone != "" {
		if _, err := time.LoadLocation(s.TimeZone); err != nil {
			add(fmt.Sprintf("%s.timeZone %q is not a time zone", where, s.TimeZone), "use an IANA name such as Europe/Berlin or UTC")
		}
	}
	if s.Jitter.Duration < 0 {
		add(where+".jitter cannot be negative", `e.g. jitter: 10m`)
	}
	return errs
}

// validateBackupRefs checks what a Backup names: its pool and machines,
// its cluster, and that backupBefore entries name a backup of the same
// target.
func validateBackupRefs(r *Repo) Errors {
	var errs Errors
	pools := map[string]*MachinePool{}
	for _, p := range r.MachinePools {
		pools[p.Metadata.Name] = p
	}
	clusters := map[string]*Cluster{}
	for _, c := range r.Clusters {
		clusters[c.Metadata.Name] = c
	}
	byName := map[string]*Backup{}
	for _, b := range r.Backups {
		add := func(msg, hint string) {
			errs = append(errs, &Error{Origin: b.Origin, Object: "Backup/" + b.Metadata.Name, Msg: msg, Hint: hint})
		}
		if prev, ok := byName[b.Metadata.Name]; ok {
			add("defined twice; also at "+prev.Origin.String(), "give each Backup a unique metadata.name")
		}
		byName[b.Metadata.Name] = b
		if m := b.Spec.Machines; m != nil {
			p, ok := pools[m.Pool]
			if !ok {
				add(fmt.Sprintf("MachinePool %q is not in the repository", m.Pool), "name a MachinePool the repository defines")
				continue
			}
			for _, name := range m.Machines {
				if _, err := p.Machine(name); err != nil {
					add(fmt.Sprintf("machine %q is not in MachinePool %s", name, m.Pool), HintOf(err))
				}
			}
		}
		if c := b.Spec.Cluster; c != nil {
			if _, ok := clusters[c.Name]; !ok {
				add(fmt.Sprintf("Cluster %q is not in the repository", c.Name), "name a Cluster the repository defines")
			}
		}
	}
	for _, c := range r.Clusters {
		for _, comp := range c.Spec.Components {
			if comp.BackupBefore == "" {
				continue
			}
			b, ok := byName[comp.BackupBefore]
			if !ok || b.Spec.Cluster == nil || b.Spec.Cluster.Name != c.Metadata.Name {
				errs = append(errs, &Error{Origin: c.Origin, Object: "Cluster/" + c.Metadata.Name,
					Msg:  fmt.Sprintf("component %q: backupBefore %q is not a Backup of this cluster", comp.Name, comp.BackupBefore),
					Hint: "name a Backup whose spec.cluster.name is " + c.Metadata.Name})
			}
		}
	}
	for _, p := range r.MachinePools {
		for i := range p.Spec.Machines {
			m := &p.Spec.Machines[i]
			name := p.StateFor(m).BackupBefore
			if name == "" {
				continue
			}
			if b, ok := byName[name]; !ok || !b.RunsOn(p.Metadata.Name, m.Name) {
				errs = append(errs, &Error{Origin: m.Origin, Object: "MachinePool/" + p.Metadata.Name,
					Msg:  fmt.Sprintf("machine %s: backupBefore %q is not a Backup that runs on this machine", m.Name, name),
					Hint: "name a Backup whose spec.machines.pool is " + p.Metadata.Name + " and that lists this machine (or all)"})
			}
		}
	}
	return errs
}
