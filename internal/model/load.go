package model

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Repo is everything tend found in an ops repository.
type Repo struct {
	Root          string
	Clusters      []*Cluster
	ImagePolicies []*ImagePolicy
	MachinePools  []*MachinePool
	Backups       []*Backup
	// Problems are errors and warnings found while loading; Load returns
	// them as its error too when any is not a warning.
	Problems Errors
}

// Cluster returns the Cluster named name.
func (r *Repo) Cluster(name string) (*Cluster, error) {
	var names []string
	for _, c := range r.Clusters {
		if c.Metadata.Name == name {
			return c, nil
		}
		names = append(names, c.Metadata.Name)
	}
	hint := "add a file with `kind: Cluster` and `metadata.name: " + name + "` to the repository"
	if len(names) > 0 {
		hint = "the repository defines: " + strings.Join(names, ", ")
	}
	return nil, &Error{Msg: fmt.Sprintf("no Cluster named %q in %s", name, r.Root), Hint: hint}
}

// Load reads every YAML file under root and decodes the tend kinds in it.
// Files that are not tend kinds (the manifests of components) are skipped
// here: render reads them. The returned Repo is usable for the clusters that
// loaded cleanly even when err is not nil.
func Load(root string) (*Repo, error) {
	r := &Repo{Root: root}
	err := WalkRepo(root, func(path, rel string) error {
		ext := filepath.Ext(path)
		if ext != ".yaml" && ext != ".yml" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r.loadFile(rel, data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read repository %s: %w", root, err)
	}
	sort.Slice(r.Clusters, func(i, j int) bool { return r.Clusters[i].Metadata.Name < r.Clusters[j].Metadata.Name })
	sort.Slice(r.MachinePools, func(i, j int) bool { return r.MachinePools[i].Metadata.Name < r.MachinePools[j].Metadata.Name })
	sort.Slice(r.Backups, func(i, j int) bool { return r.Backups[i].Metadata.Name < r.Backups[j].Metadata.Name })
	r.Problems = append(r.Problems, validate(r)...)
	return r, r.Problems.Err()
}

var tendAPI = regexp.MustCompile(`(?m)^apiVersion:\s*["']?tend\.dev/`)

func (r *Repo) loadFile(file string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			// A broken file that is not a tend kind may be a template of
			// some other tool; render reports it if a component reads it.
			if tendAPI.Match(data) {
				r.Problems = append(r.Problems, YAMLError(file, err))
			}
			return
		}
		if len(doc.Content) == 0 {
			continue
		}
		n := doc.Content[0]
		if n.Kind != yaml.MappingNode {
			continue
		}
		apiVersion, kind := scalarField(n, "apiVersion"), scalarField(n, "kind")
		if !strings.HasPrefix(apiVersion, Group+"/") {
			continue
		}
		origin := Origin{File: file, Line: n.Line}
		if apiVersion != APIVersion {
			r.Problems = append(r.Problems, &Error{Origin: origin, Msg: fmt.Sprintf("apiVersion %s is not known to this tend", apiVersion),
				Hint: "use apiVersion: " + APIVersion})
			continue
		}
		switch kind {
		case KindCluster:
			var c Cluster
			if errs := decodeStrict(file, n, &c); len(errs) > 0 {
				r.Problems = append(r.Problems, errs...)
				continue
			}
			c.Origin = origin
			r.Clusters = append(r.Clusters, &c)
		case KindImagePolicy:
			var p ImagePolicy
			if errs := decodeStrict(file, n, &p); len(errs) > 0 {
				r.Problems = append(r.Problems, errs...)
				continue
			}
			p.Origin = origin
			if err := validatePolicy(&p); err != nil {
				r.Problems = append(r.Problems, err)
				continue
			}
			r.ImagePolicies = append(r.ImagePolicies, &p)
		case KindMachinePool:
			var p MachinePool
			if errs := decodeStrict(file, n, &p); len(errs) > 0 {
				r.Problems = append(r.Problems, errs...)
				continue
			}
			p.Origin = origin
			poolLines(n, &p)
			if errs := validatePool(&p); len(errs) > 0 {
				r.Problems = append(r.Problems, errs...)
				continue
			}
			r.MachinePools = append(r.MachinePools, &p)
		case KindBackup:
			var b Backup
			if errs := decodeStrict(file, n, &b); len(errs) > 0 {
				r.Problems = append(r.Problems, errs...)
				continue
			}
			b.Origin = origin
			if errs := validateBackup(&b); len(errs) > 0 {
				r.Problems = append(r.Problems, errs...)
				continue
			}
			r.Backups = append(r.Backups, &b)
		default:
			r.Problems = append(r.Problems, &Error{Origin: origin, Msg: fmt.Sprintf("unknown kind %q", kind),
				Hint: "tend.dev/v1alpha1 kinds are: " + strings.Join(KnownKinds, ", ")})
		}
	}
}

// poolLines records where machines and files are, for errors found later
// (a template error in a file's content points into the pool file).
func poolLines(n *yaml.Node, p *MachinePool) {
	spec := child(n, "spec")
	state := func(st *yaml.Node, s *MachineState) {
		files := child(st, "files")
		for i, f := range contentOf(files) {
			if i >= len(s.Files) {
				break
			}
			s.Files[i].Line = f.Line
			if c := child(f, "content"); c != nil {
				s.Files[i].Line = c.Line
				if c.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
					s.Files[i].Line++
				}
			}
		}
		if fw := child(st, "firewall"); fw != nil && s.Firewall != nil {
			s.Firewall.Line = fw.Line
			if c := child(fw, "ruleset"); c != nil {
				s.Firewall.Line = c.Line
				if c.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
					s.Firewall.Line++
				}
			}
		}
	}
	state(child(spec, "state"), &p.Spec.State)
	if ms := child(spec, "machines"); ms != nil {
		for i, m := range ms.Content {
			if i < len(p.Spec.Machines) {
				p.Spec.Machines[i].Origin = Origin{File: p.Origin.File, Line: m.Line}
				state(child(m, "state"), &p.Spec.Machines[i].State)
			}
		}
	}
}

func contentOf(n *yaml.Node) []*yaml.Node {
	if n == nil {
		return nil
	}
	return n.Content
}

func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// YAMLError turns a yaml.v3 or sigs.k8s.io/yaml error into an Error with the line.
func YAMLError(file string, err error) *Error {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		fmt.Sscanf(m[1], "%d", &line)
		msg = m[2]
	}
	return &Error{Origin: Origin{File: file, Line: line}, Msg: "invalid YAML: " + msg,
		Hint: "fix the YAML syntax at that line (indentation, a missing colon, or an unquoted special character)"}
}

func scalarField(n *yaml.Node, key string) string {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// decodeStrict decodes n into v and reports unknown fields with their line.
func decodeStrict(file string, n *yaml.Node, v any) Errors {
	var errs Errors
	checkFields(file, n, reflect.TypeOf(v).Elem(), "", &errs)
	if len(errs) > 0 {
		return errs
	}
	if err := n.Decode(v); err != nil {
		return Errors{typeError(file, n, err)}
	}
	return nil
}

func typeError(file string, n *yaml.Node, err error) *Error {
	msg := err.Error()
	line := n.Line
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := regexp.MustCompile(`line (\d+): (.*)`).FindStringSubmatch(msg); m != nil {
		fmt.Sscanf(m[1], "%d", &line)
		msg = m[2]
	}
	return &Error{Origin: Origin{File: file, Line: line}, Msg: msg, Hint: "check the value's type against the schema (schema/tend.dev_v1alpha1.json)"}
}

var durationType = reflect.TypeOf(Duration{})

// checkFields walks n against t and reports keys t has no field for.
func checkFields(file string, n *yaml.Node, t reflect.Type, path string, errs *Errors) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // a type error the decoder reports
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "-" || tag == "" {
				continue
			}
			fields[tag] = f.Type
			names = append(names, tag)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, &Error{Origin: Origin{File: file, Line: k.Line},
					Msg:  fmt.Sprintf("unknown field %q%s", k.Value, inPath(path)),
					Hint: "known fields here: " + strings.Join(names, ", ") + suggest(k.Value, names)})
				continue
			}
			checkFields(file, n.Content[i+1], ft, joinPath(path, k.Value), errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			checkFields(file, c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkFields(file, n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value), errs)
		}
	}
}

func inPath(p string) string {
	if p == "" {
		return ""
	}
	return " in " + p
}

func joinPath(p, k string) string {
	if p == "" {
		return k
	}
	return p + "." + k
}

// suggest names a known field close to a mistyped one.
func suggest(got string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(strings.ToLower(got), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// WalkRepo calls fn for every regular file under root, in lexical order,
// skipping hidden directories (.git and the like), with its path relative
// to root in slash form. Every reader of an ops repository walks it this way.
func WalkRepo(root string, fn func(path, rel string) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		return fn(p, filepath.ToSlash(rel))
	})
}
