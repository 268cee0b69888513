package model

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validate checks what the schema alone cannot: names, references and cycles.
func validate(r *Repo) Errors {
	var errs Errors
	seen := map[string]*Cluster{}
	for _, c := range r.Clusters {
		if prev, ok := seen[c.Metadata.Name]; ok {
			errs = append(errs, &Error{Origin: c.Origin, Object: "Cluster/" + c.Metadata.Name,
				Msg:  "defined twice; also at " + prev.Origin.String(),
				Hint: "give each Cluster a unique metadata.name"})
			continue
		}
		seen[c.Metadata.Name] = c
		errs = append(errs, ValidateCluster(r.Root, c)...)
	}
	pools := map[string]*MachinePool{}
	for _, p := range r.MachinePools {
		if prev, ok := pools[p.Metadata.Name]; ok {
			errs = append(errs, &Error{Origin: p.Origin, Object: "MachinePool/" + p.Metadata.Name,
				Msg:  "defined twice; also at " + prev.Origin.String(),
				Hint: "give each MachinePool a unique metadata.name"})
		}
		pools[p.Metadata.Name] = p
	}
	return append(errs, validateBackupRefs(r)...)
}

// ValidateCluster checks one Cluster: names, paths, references and dependency cycles.
func ValidateCluster(root string, c *Cluster) Errors {
	var errs Errors
	obj := "Cluster/" + c.Metadata.Name
	add := func(msg, hint string) {
		errs = append(errs, &Error{Origin: c.Origin, Object: obj, Msg: msg, Hint: hint})
	}
	if !dnsLabel.MatchString(c.Metadata.Name) {
		add(fmt.Sprintf("metadata.name %q is not a DNS label", c.Metadata.Name), "use lower case letters, digits and '-'")
	}
	byName := map[string]Component{}
	for i, comp := range c.Spec.Components {
		where := fmt.Sprintf("spec.components[%d]", i)
		if comp.Name == "" {
			add(where+": name is required", "give every component a name")
			continue
		}
		if !dnsLabel.MatchString(comp.Name) || len(comp.Name) > 63 {
			add(fmt.Sprintf("component %q: name is not a DNS label", comp.Name), "use lower case letters, digits and '-', at most 63")
		}
		if _, dup := byName[comp.Name]; dup {
			add(fmt.Sprintf("component %q is listed twice", comp.Name), "component names must be unique within a Cluster")
		}
		byName[comp.Name] = comp
		switch {
		case comp.Helm != nil:
			h := comp.Helm
			switch {
			case comp.Path != "":
				add(fmt.Sprintf("component %q: set path or helm, not both", comp.Name), "a Helm component's chart is helm.chart")
			case h.Chart == "":
				add(fmt.Sprintf("component %q: helm.chart is required", comp.Name), "a path in the repository, oci://…, or a chart name with helm.repo")
			case (strings.HasPrefix(h.Chart, "oci://") || h.Repo != "") && h.Version == "":
				add(fmt.Sprintf("component %q: helm.version is required for a remote chart", comp.Name), "pin the chart version, e.g. version: 1.4.2")
			}
		case comp.Path == "":
			add(fmt.Sprintf("component %q: path is required", comp.Name), "set path to a directory relative to the repository root, or helm for a chart")
		case path.IsAbs(comp.Path) || strings.HasPrefix(path.Clean(comp.Path), ".."):
			add(fmt.Sprintf("component %q: path %q leaves the repository", comp.Name, comp.Path), "paths are relative to the repository root")
		}
	}
	for _, comp := range c.Spec.Components {
		for _, d := range comp.DependsOn {
			if _, ok := byName[d]; !ok {
				add(fmt.Sprintf("component %q depends on %q, which this Cluster does not list", comp.Name, d),
					"add component "+d+" to spec.components or remove it from dependsOn")
			}
		}
	}
	if cycle := FindCycle(c.Spec.Components); cycle != nil {
		add("dependency cycle: "+strings.Join(cycle, " → "), "remove one of these dependsOn entries")
	}
	return errs
}

// FindCycle returns one dependency cycle among comps, or nil.
func FindCycle(comps []Component) []string {
	deps := map[string][]string{}
	var names []string
	for _, c := range comps {
		deps[c.Name] = c.DependsOn
		names = append(names, c.Name)
	}
	sort.Strings(names)
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var found []string
	var visit func(n string) bool
	visit = func(n string) bool {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range deps[n] {
			if _, ok := deps[d]; !ok {
				continue
			}
			switch color[d] {
			case grey:
				for i, s := range stack {
					if s == d {
						found = append(append([]string{}, stack[i:]...), d)
					}
				}
				return true
			case white:
				if visit(d) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return false
	}
	for _, n := range names {
		if color[n] == white && visit(n) {
			return found
		}
	}
	return nil
}

// Order returns the component names in an order where every component
// comes after its dependencies (ties by name), assuming no cycle.
func Order(comps []Component) []string {
	done := map[string]bool{}
	byName := map[string]Component{}
	var names []string
	for _, c := range comps {
		byName[c.Name] = c
		names = append(names, c.Name)
	}
	sort.Strings(names)
	var out []string
	var visit func(n string)
	visit = func(n string) {
		if done[n] {
			return
		}
		done[n] = true
		for _, d := range byName[n].DependsOn {
			if _, ok := byName[d]; ok {
				visit(d)
			}
		}
		out = append(out, n)
	}
	for _, n := range names {
		visit(n)
	}
	return out
}

func validatePolicy(p *ImagePolicy) *Error {
	e := func(msg, hint string) *Error {
		return &Error{Origin: p.Origin, Object: "ImagePolicy/" + p.Metadata.Name, Msg: msg, Hint: hint}
	}
	switch {
	case p.Spec.Image == "":
		return e("spec.image is required", "name the image repository, e.g. registry.example.test/shop")
	case strings.Contains(path.Base(p.Spec.Image), ":") || strings.Contains(p.Spec.Image, "@"):
		return e("spec.image must not carry a tag or digest", "write the repository only; the policy picks the tag")
	case (p.Spec.Semver == nil) == (p.Spec.Pattern == nil):
		return e("exactly one of spec.semver and spec.pattern is required", "use semver: {range: \">=1.0.0\"} or pattern: {regex: ...}")
	case p.Spec.Pattern != nil:
		if _, err := regexp.Compile(p.Spec.Pattern.Regex); err != nil {
			return e("spec.pattern.regex: "+err.Error(), "write an RE2 regular expression")
		}
		if o := p.Spec.Pattern.Order; o != "" && o != "numerical" && o != "alphabetical" {
			return e(fmt.Sprintf("spec.pattern.order %q is not numerical or alphabetical", o), "use numerical or alphabetical")
		}
	}
	return nil
}
