// Package model holds the kinds of the ops repository (apiVersion
// tend.dev/v1alpha1), loads them from a directory tree with file:line
// errors, and validates them. It does no I/O beyond reading the tree.
//
// Field comments double as user documentation: they become the
// descriptions in the generated JSON Schema.
package model

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/invopop/jsonschema"
	"gopkg.in/yaml.v3"
)

// Group and Version of every tend kind.
const (
	Group      = "tend.dev"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// Kinds tend knows; a file with apiVersion tend.dev/* and another kind is an error.
const (
	KindCluster     = "Cluster"
	KindImagePolicy = "ImagePolicy"
)

// KnownKinds lists the kinds this version of tend reads.
var KnownKinds = []string{KindCluster, KindImagePolicy, KindMachinePool, KindBackup}

// ObjectMeta is the part of Kubernetes metadata tend kinds use.
type ObjectMeta struct {
	// Name identifies the object; `tend --cluster NAME` selects a Cluster by it.
	Name string `json:"name" yaml:"name" jsonschema:"required,pattern=^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"`
	// Labels are free-form and ignored by tend.
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	// Annotations are free-form and ignored by tend.
	Annotations map[string]string `json:"annotations,omitempty" yaml:"annotations,omitempty"`
}

// Cluster is one Kubernetes cluster: the components tend keeps applied to it.
type Cluster struct {
	APIVersion string      `json:"apiVersion" yaml:"apiVersion" jsonschema:"required,enum=tend.dev/v1alpha1"`
	Kind       string      `json:"kind" yaml:"kind" jsonschema:"required,enum=Cluster"`
	Metadata   ObjectMeta  `json:"metadata" yaml:"metadata" jsonschema:"required"`
	Spec       ClusterSpec `json:"spec" yaml:"spec" jsonschema:"required"`

	// Origin is where the Cluster was read from; not part of the file.
	Origin Origin `json:"-" yaml:"-"`
}

// ClusterSpec is the desired state of a cluster.
type ClusterSpec struct {
	// Interval is how often to look for a new revision of the source (default 1m).
	Interval Duration `json:"interval,omitempty" yaml:"interval,omitempty"`
	// Substitutions apply to every component; a component's own win. The
	// variable cluster_name is always set to metadata.name.
	Substitutions map[string]string `json:"substitutions,omitempty" yaml:"substitutions,omitempty"`
	// Components are applied in dependency order, each independently.
	Components []Component `json:"components" yaml:"components" jsonschema:"required"`
}

// Component is a directory of manifests applied as one unit, with its own
// inventory, health and status.
type Component struct {
	// Name is unique within the cluster and names the Component status object.
	Name string `json:"name" yaml:"name" jsonschema:"required,pattern=^[a-z0-9]([-a-z0-9]*[a-z0-9])?$,maxLength=63"`
	// Path is relative to the repository root: plain YAML files, or a
	// kustomization.yaml. A Helm component sets helm instead.
	Path string `json:"path,omitempty" yaml:"path,omitempty"`
	// Helm renders a chart in-process instead of reading path.
	Helm *HelmChart `json:"helm,omitempty" yaml:"helm,omitempty"`
	// Namespace is the default namespace for namespaced objects that name none.
	Namespace string `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	// DependsOn lists components that must be Ready before this one is applied.
	DependsOn []string `json:"dependsOn,omitempty" yaml:"dependsOn,omitempty"`
	// Prune deletes objects removed from git (default true). Only objects tend created are ever deleted.
	Prune *bool `json:"prune,omitempty" yaml:"prune,omitempty"`
	// Wait makes Ready mean every object is healthy (kstatus Current), not only applied (default false).
	Wait bool `json:"wait,omitempty" yaml:"wait,omitempty"`
	// Timeout bounds one apply, including the wait (default 5m).
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// Force takes over fields owned by other field managers instead of stopping on a conflict.
	Force bool `json:"force,omitempty" yaml:"force,omitempty"`
	// Substitutions replace ${name} in the rendered manifests; ${name:=default} gives a default.
	Substitutions map[string]string `json:"substitutions,omitempty" yaml:"substitutions,omitempty"`
	// BackupBefore names a Backup of this cluster that must succeed before
	// a change to this component is applied; a failed backup blocks this
	// component only.
	BackupBefore string `json:"backupBefore,omitempty" yaml:"backupBefore,omitempty"`
}

// PruneEnabled reports whether pruning is on (the default).
func (c Component) PruneEnabled() bool { return c.Prune == nil || *c.Prune }

// TimeoutOrDefault returns the timeout, 5m when unset.
func (c Component) TimeoutOrDefault() time.Duration {
	if c.Timeout.Duration <= 0 {
		return 5 * time.Minute
	}
	return c.Timeout.Duration
}

// IntervalOrDefault returns the interval, 1m when unset.
func (s ClusterSpec) IntervalOrDefault() time.Duration {
	if s.Interval.Duration <= 0 {
		return time.Minute
	}
	return s.Interval.Duration
}

// Vars returns the substitutions for component c in cluster cl: built-ins,
// then the cluster's, then the component's.
func (cl *Cluster) Vars(c Component) map[string]string {
	vars := map[string]string{"cluster_name": cl.Metadata.Name}
	for k, v := range cl.Spec.Substitutions {
		vars[k] = v
	}
	for k, v := range c.Substitutions {
		vars[k] = v
	}
	return vars
}

// Origin is a position in the repository.
type Origin struct {
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
}

func (o Origin) String() string {
	if o.Line > 0 {
		return fmt.Sprintf("%s:%d", o.File, o.Line)
	}
	return o.File
}

// Duration is a Go duration written as a string ("30s", "2m").
type Duration struct{ time.Duration }

// UnmarshalYAML reads "1m30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: a duration is a string such as \"30s\" or \"2m\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration; write it like \"30s\", \"2m\" or \"1h\"", n.Line, s)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the string form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON writes the string form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads the string form.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	d.Duration = v
	return err
}

// JSONSchema describes Duration for editors.
func (Duration) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		Type:        "string",
		Pattern:     `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`,
		Description: `A duration such as "30s", "2m" or "1h30m".`,
	}
}

// ImagePolicy says which tags of an image repository may be deployed;
// `tend image update` writes the newest allowed tag into the repository.
type ImagePolicy struct {
	APIVersion string          `json:"apiVersion" yaml:"apiVersion" jsonschema:"required,enum=tend.dev/v1alpha1"`
	Kind       string          `json:"kind" yaml:"kind" jsonschema:"required,enum=ImagePolicy"`
	Metadata   ObjectMeta      `json:"metadata" yaml:"metadata" jsonschema:"required"`
	Spec       ImagePolicySpec `json:"spec" yaml:"spec" jsonschema:"required"`

	Origin Origin `json:"-" yaml:"-"`
}

// ImagePolicySpec names the image and the rule.
type ImagePolicySpec struct {
	// Image is the repository without a tag, e.g. registry.example.test/shop.
	Image string `json:"image" yaml:"image" jsonschema:"required"`
	// Semver allows tags that are versions in a range.
	Semver *SemverPolicy `json:"semver,omitempty" yaml:"semver,omitempty"`
	// Pattern allows tags matching a regular expression, ordered by a capture.
	Pattern *PatternPolicy `json:"pattern,omitempty" yaml:"pattern,omitempty"`
}

// SemverPolicy picks the highest version in Range.
type SemverPolicy struct {
	// Range is a semver constraint such as ">=1.0.0 <2.0.0" or "^1.4".
	Range string `json:"range" yaml:"range" jsonschema:"required"`
	// Prereleases allows 1.5.0-rc.1 and the like (default false).
	Prereleases bool `json:"prereleases,omitempty" yaml:"prereleases,omitempty"`
}

// PatternPolicy picks, among tags matching Regex, the highest by Extract.
type PatternPolicy struct {
	// Regex must match the whole tag; named groups can be used in Extract.
	Regex string `json:"regex" yaml:"regex" jsonschema:"required"`
	// Extract is the ordering key, e.g. "$ts" (default: the whole tag).
	Extract string `json:"extract,omitempty" yaml:"extract,omitempty"`
	// Order is numerical or alphabetical (default alphabetical), highest wins.
	Order string `json:"order,omitempty" yaml:"order,omitempty" jsonschema:"enum=numerical,enum=alphabetical"`
}

// HelmChart is a chart rendered with the Helm SDK and applied through the
// same engine as every component: no Helm release, so drift correction,
// pruning and diff work as for any other.
type HelmChart struct {
	// Chart is a path in the repository, an oci:// reference, or the chart's
	// name in the HTTP repository given by repo.
	Chart string `json:"chart" yaml:"chart" jsonschema:"required"`
	// Repo is an HTTP chart repository URL (with index.yaml).
	Repo string `json:"repo,omitempty" yaml:"repo,omitempty"`
	// Version pins the chart version; required for oci:// and repo charts.
	Version string `json:"version,omitempty" yaml:"version,omitempty"`
	// ReleaseName is .Release.Name (default: the component name).
	ReleaseName string `json:"releaseName,omitempty" yaml:"releaseName,omitempty"`
	// Values are files in the repository, merged in order over the chart's
	// defaults, after ${var} substitution.
	Values []string `json:"values,omitempty" yaml:"values,omitempty"`
}
