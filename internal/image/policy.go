package image

import (
	"fmt"
	"math/big"
	"regexp"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"

	"tend.dev/tend/internal/model"
)

// Select picks the newest tag the policy allows. It is pure: the registry
// listing happens elsewhere.
func Select(p *model.ImagePolicy, tags []string) (string, error) {
	obj := "ImagePolicy/" + p.Metadata.Name
	noMatch := func(rule string) error {
		sample := append([]string(nil), tags...)
		sort.Strings(sample)
		if len(sample) > 8 {
			sample = append(sample[len(sample)-8:], "…")
		}
		return &model.Error{Origin: p.Origin, Object: obj, Msg: fmt.Sprintf("no tag of %s matches %s (%d tags)", p.Spec.Image, rule, len(tags)),
			Hint: "the registry has: " + strings.Join(sample, ", ") + "; push a matching tag or widen the policy"}
	}
	switch {
	case p.Spec.Semver != nil:
		c, err := semver.NewConstraint(p.Spec.Semver.Range)
		if err != nil {
			return "", &model.Error{Origin: p.Origin, Object: obj, Msg: "spec.semver.range: " + err.Error(), Hint: `write a range such as ">=1.0.0 <2.0.0"`}
		}
		var best *semver.Version
		bestTag := ""
		for _, t := range tags {
			v, err := semver.NewVersion(t)
			if err != nil || (v.Prerelease() != "" && !p.Spec.Semver.Prereleases) {
				continue
			}
			check := v
			if v.Prerelease() != "" {
				// Ranges exclude pre-releases; allowed ones are judged by the
				// release they lead to: 1.6.0-rc.1 by 1.6.0.
				base, _ := v.SetPrerelease("")
				check = &base
			}
			if !c.Check(check) {
				continue
			}
			if best == nil || v.GreaterThan(best) || (v.Equal(best) && t > bestTag) {
				best, bestTag = v, t
			}
		}
		if best == nil {
			return "", noMatch("semver " + p.Spec.Semver.Range)
		}
		return bestTag, nil
	case p.Spec.Pattern != nil:
		re, err := regexp.Compile("^(?:" + p.Spec.Pattern.Regex + ")$")
		if err != nil {
			return "", &model.Error{Origin: p.Origin, Object: obj, Msg: "spec.pattern.regex: " + err.Error()}
		}
		type cand struct{ tag, key string }
		var cs []cand
		for _, t := range tags {
			m := re.FindStringSubmatchIndex(t)
			if m == nil {
				continue
			}
			key := t
			if p.Spec.Pattern.Extract != "" {
				key = string(re.ExpandString(nil, p.Spec.Pattern.Extract, t, m))
			}
			cs = append(cs, cand{t, key})
		}
		if len(cs) == 0 {
			return "", noMatch("pattern " + p.Spec.Pattern.Regex)
		}
		numeric := p.Spec.Pattern.Order == "numerical"
		less := func(a, b cand) bool {
			if numeric {
				x, okx := new(big.Float).SetString(a.key)
				y, oky := new(big.Float).SetString(b.key)
				if okx && oky {
					if c := x.Cmp(y); c != 0 {
						return c < 0
					}
					return a.tag < b.tag
				}
			}
			if a.key != b.key {
				return a.key < b.key
			}
			return a.tag < b.tag
		}
		best := cs[0]
		for _, c := range cs[1:] {
			if less(best, c) {
				best = c
			}
		}
		return best.tag, nil
	}
	return "", &model.Error{Origin: p.Origin, Object: obj, Msg: "no rule", Hint: "set spec.semver or spec.pattern"}
}
