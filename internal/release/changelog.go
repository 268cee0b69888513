package release

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// sections orders the changelog; other types are left out, as in
// conventional-changelog.
var sections = []struct{ typ, title string }{
	{"feat", "Features"},
	{"fix", "Bug Fixes"},
	{"perf", "Performance Improvements"},
	{"revert", "Reverts"},
}

// Notes renders the Markdown release notes: breaking changes first, then
// one section per type. commitURL, when set, is a template with {hash}
// (e.g. https://git.example.test/app/commit/{hash}).
func Notes(version string, date time.Time, commits []Commit, commitURL string) string {
	commits = Effective(commits)
	var b strings.Builder
	fmt.Fprintf(&b, "## %s (%s)\n", version, date.UTC().Format("2006-01-02"))
	line := func(c Commit, text string) {
		scope := ""
		if c.Scope != "" {
			scope = "**" + c.Scope + ":** "
		}
		ref := short(c.Hash)
		if commitURL != "" && c.Hash != "" {
			ref = fmt.Sprintf("[%s](%s)", short(c.Hash), strings.ReplaceAll(commitURL, "{hash}", c.Hash))
		}
		if ref != "" {
			ref = " (" + ref + ")"
		}
		fmt.Fprintf(&b, "* %s%s%s\n", scope, strings.ReplaceAll(text, "\n", " "), ref)
	}
	var breaking []Commit
	for _, c := range commits {
		if c.Valid() && c.Breaking {
			breaking = append(breaking, c)
		}
	}
	if len(breaking) > 0 {
		b.WriteString("\n### ⚠ BREAKING CHANGES\n\n")
		for _, c := range breaking {
			line(c, c.BreakingNote)
		}
	}
	for _, s := range sections {
		var in []Commit
		for _, c := range commits {
			if c.Valid() && c.Type == s.typ {
				in = append(in, c)
			}
		}
		if len(in) == 0 {
			continue
		}
		sort.SliceStable(in, func(i, j int) bool { return in[i].Scope < in[j].Scope })
		fmt.Fprintf(&b, "\n### %s\n\n", s.title)
		for _, c := range in {
			line(c, c.Subject)
		}
	}
	return b.String()
}

func short(h string) string {
	if len(h) > 7 {
		return h[:7]
	}
	return h
}

// PrependChangelog puts notes at the top of an existing CHANGELOG.md,
// under its title.
func PrependChangelog(existing, notes string) string {
	const title = "# Changelog\n"
	body := strings.TrimPrefix(existing, title)
	body = strings.TrimLeft(body, "\n")
	if body == "" {
		return title + "\n" + notes
	}
	return title + "\n" + notes + "\n" + body
}
