// Package release computes semantic versions from Conventional Commits
// 1.0 messages, writes changelogs, and tags releases. Parsing, version
// computation and changelog rendering are pure; repo.go does the git I/O
// through go-git.
package release

import (
	"fmt"
	"regexp"
	"strings"
)

// Bump is the size of a version increment, ordered.
type Bump int

// Bumps, smallest first.
const (
	BumpNone Bump = iota
	BumpPatch
	BumpMinor
	BumpMajor
)

func (b Bump) String() string {
	return [...]string{"none", "patch", "minor", "major"}[b]
}

// Commit is one parsed commit message.
type Commit struct {
	Hash     string `json:"hash"`
	Type     string `json:"type,omitempty"` // lower-cased
	Scope    string `json:"scope,omitempty"`
	Subject  string `json:"subject,omitempty"`
	Body     string `json:"body,omitempty"`
	Breaking bool   `json:"breaking,omitempty"`
	// BreakingNote is the text of a BREAKING CHANGE footer, or the subject for a "!".
	BreakingNote string            `json:"breakingNote,omitempty"`
	Footers      map[string]string `json:"footers,omitempty"`
	// Reverts is the hash, or the header, of the commit this one reverts.
	Reverts string `json:"reverts,omitempty"`
	// Merge marks merge commits, which carry no release information.
	Merge bool `json:"merge,omitempty"`
	// Err says why the message is not a Conventional Commit.
	Err string `json:"error,omitempty"`
	// Header is the first line as written.
	Header string `json:"header"`
}

// Valid reports whether the message parsed as a Conventional Commit.
func (c Commit) Valid() bool { return c.Err == "" && !c.Merge }

var (
	headerRe  = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9-]*)(?:\(([^()\r\n]*)\))?(!)?: (\S.*)$`)
	footerRe  = regexp.MustCompile(`^(BREAKING CHANGE|BREAKING-CHANGE|[A-Za-z][A-Za-z0-9-]*)(?:: | #)(.*)$`)
	revertsRe = regexp.MustCompile(`(?i)This reverts commit ([0-9a-f]{7,40})`)
	gitRevert = regexp.MustCompile(`^Revert "(.+)"$`)
	mergeRe   = regexp.MustCompile(`^Merge (branch|pull request|remote-tracking branch|tag|commit) `)
)

// Parse reads a commit message. It never fails: a message that is not a
// Conventional Commit comes back with Err set, which counts as no release
// and is what `tend release lint` reports.
func Parse(hash, msg string) Commit {
	msg = strings.ReplaceAll(msg, "\r\n", "\n")
	msg = strings.TrimSpace(msg)
	header, rest, _ := strings.Cut(msg, "\n")
	c := Commit{Hash: hash, Header: header, Body: strings.TrimSpace(rest)}
	if mergeRe.MatchString(header) {
		c.Merge = true
		return c
	}
	if m := gitRevert.FindStringSubmatch(header); m != nil {
		// git revert's default message: Revert "<header>"
		c.Type, c.Subject = "revert", m[1]
		c.Reverts = m[1]
		if r := revertsRe.FindStringSubmatch(rest); r != nil {
			c.Reverts = r[1]
		}
		return c
	}
	m := headerRe.FindStringSubmatch(header)
	if m == nil {
		c.Err = lintHeader(header)
		return c
	}
	c.Type, c.Scope, c.Subject = strings.ToLower(m[1]), m[2], strings.TrimSpace(m[4])
	if m[3] == "!" {
		c.Breaking, c.BreakingNote = true, c.Subject
	}
	c.Footers = map[string]string{}
	paragraphs := strings.Split(c.Body, "\n\n")
	// Footers are the trailing paragraph's "Token: value" lines.
	if len(paragraphs) > 0 {
		last := paragraphs[len(paragraphs)-1]
		lines := strings.Split(last, "\n")
		if footerRe.MatchString(lines[0]) {
			var key string
			for _, l := range lines {
				if f := footerRe.FindStringSubmatch(l); f != nil {
					key = f[1]
					c.Footers[key] = f[2]
				} else if key != "" {
					c.Footers[key] += "\n" + l
				}
			}
			c.Body = strings.TrimSpace(strings.Join(paragraphs[:len(paragraphs)-1], "\n\n"))
		}
	}
	for _, k := range []string{"BREAKING CHANGE", "BREAKING-CHANGE"} {
		if v, ok := c.Footers[k]; ok {
			c.Breaking, c.BreakingNote = true, strings.TrimSpace(v)
		}
	}
	if c.Type == "revert" {
		c.Reverts = c.Subject
		if r := revertsRe.FindStringSubmatch(rest); r != nil {
			c.Reverts = r[1]
		} else if v, ok := c.Footers["Refs"]; ok {
			c.Reverts = strings.TrimSpace(v)
		}
	}
	if len(c.Footers) == 0 {
		c.Footers = nil
	}
	return c
}

// lintHeader explains why a header is not a Conventional Commit.
func lintHeader(h string) string {
	switch {
	case h == "":
		return "empty message"
	case !strings.Contains(h, ":"):
		return "no type: write <type>[(scope)][!]: <subject>, e.g. \"fix(api): handle empty input\""
	case regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]*(\([^)]*\))?!?:\S`).MatchString(h):
		return "a space must follow the colon"
	case regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]*(\([^)]*\))?!?: *$`).MatchString(h):
		return "the subject after the colon is empty"
	case regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]* +[(:!]`).MatchString(h):
		return "no space is allowed between the type and the scope or colon"
	case regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]*\([^)]*$`).MatchString(strings.SplitN(h, ":", 2)[0]):
		return "the scope's parenthesis is not closed"
	}
	return fmt.Sprintf("%q does not start with <type>[(scope)][!]: ", h)
}

// BumpFor returns the increment one commit asks for.
func BumpFor(c Commit) Bump {
	switch {
	case !c.Valid():
		return BumpNone
	case c.Breaking:
		return BumpMajor
	case c.Type == "feat":
		return BumpMinor
	case c.Type == "fix":
		return BumpPatch
	}
	return BumpNone
}

// Effective drops reverted commits: a revert of a commit in the list
// cancels both. Commits are newest first, as git log lists them.
func Effective(commits []Commit) []Commit {
	cancelled := map[int]bool{}
	for i, c := range commits {
		if c.Type != "revert" || c.Reverts == "" {
			continue
		}
		for j := i + 1; j < len(commits); j++ {
			o := commits[j]
			if cancelled[j] {
				continue
			}
			if (len(c.Reverts) >= 7 && strings.HasPrefix(o.Hash, c.Reverts)) || o.Header == c.Reverts {
				cancelled[i], cancelled[j] = true, true
				break
			}
		}
	}
	var out []Commit
	for i, c := range commits {
		if !cancelled[i] {
			out = append(out, c)
		}
	}
	return out
}
