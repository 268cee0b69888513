package release

import (
	"fmt"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Options shape version computation.
type Options struct {
	// TagPrefix precedes versions in tags: "v", or "api/v" in a monorepo.
	TagPrefix string
	// Initial is the first version when no tag exists yet (default 0.1.0).
	Initial string
	// BumpMinorPreMajor makes breaking changes bump the minor while the
	// major is 0, as release-please's bump-minor-pre-major.
	BumpMinorPreMajor bool
	// Channel, when set, makes pre-releases: 1.4.0-rc.1, 1.4.0-rc.2, …
	Channel string
}

// Tag is a version tag found in the repository.
type Tag struct {
	Name    string
	Version *semver.Version
	Commit  string
}

// Next computes the next version from the last stable release and the
// commits since it (newest first). ok is false when nothing calls for a
// release. With a Channel the result is a pre-release of that next version,
// numbered after the pre-releases that exist already: 1.4.0-rc.1, -rc.2, …
func Next(last *semver.Version, commits []Commit, existing []*semver.Version, o Options) (v *semver.Version, bump Bump, ok bool, err error) {
	for _, c := range Effective(commits) {
		if b := BumpFor(c); b > bump {
			bump = b
		}
	}
	if bump == BumpNone {
		return nil, bump, false, nil
	}
	if last == nil {
		init := o.Initial
		if init == "" {
			init = "0.1.0"
		}
		v, err = semver.StrictNewVersion(init)
		if err != nil {
			return nil, bump, false, fmt.Errorf("initial version %q: %w", init, err)
		}
	} else {
		eff := bump
		if o.BumpMinorPreMajor && last.Major() == 0 && eff == BumpMajor {
			eff = BumpMinor
		}
		var n semver.Version
		switch eff {
		case BumpMajor:
			n = last.IncMajor()
		case BumpMinor:
			n = last.IncMinor()
		default:
			n = last.IncPatch()
		}
		v = &n
	}
	if o.Channel != "" {
		n := 1
		for _, e := range existing {
			if e.Major() == v.Major() && e.Minor() == v.Minor() && e.Patch() == v.Patch() && strings.HasPrefix(e.Prerelease(), o.Channel+".") {
				var k int
				if _, err := fmt.Sscanf(strings.TrimPrefix(e.Prerelease(), o.Channel+"."), "%d", &k); err == nil && k >= n {
					n = k + 1
				}
			}
		}
		p, err := v.SetPrerelease(fmt.Sprintf("%s.%d", o.Channel, n))
		if err != nil {
			return nil, bump, false, err
		}
		v = &p
	}
	return v, bump, true, nil
}

// Latest returns the highest version among tags, ignoring pre-releases
// unless withPre.
func Latest(tags []Tag, withPre bool) *Tag {
	sorted := append([]Tag(nil), tags...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Version.GreaterThan(sorted[j].Version) })
	for _, t := range sorted {
		if withPre || t.Version.Prerelease() == "" {
			return &t
		}
	}
	return nil
}
