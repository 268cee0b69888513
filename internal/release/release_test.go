package release

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-cmp/cmp"
)

// TestCorpus: real-world message shapes and the bump each asks for.
func TestCorpus(t *testing.T) {
	tests := []struct {
		name, msg string
		want      Bump
		breaking  bool
		scope     string
		invalid   bool
	}{
		{"fix", "fix: handle nil map", BumpPatch, false, "", false},
		{"feat", "feat: add export", BumpMinor, false, "", false},
		{"type is case-insensitive", "FEAT: shout", BumpMinor, false, "", false},
		{"Fix capitalised", "Fix: typo in error", BumpPatch, false, "", false},
		{"scope", "feat(api): paginate", BumpMinor, false, "api", false},
		{"scope with slashes", "fix(internal/source/gogit): peel tags", BumpPatch, false, "internal/source/gogit", false},
		{"bang", "feat!: drop v1 API", BumpMajor, true, "", false},
		{"bang with scope", "refactor(api)!: rename fields", BumpMajor, true, "api", false},
		{"breaking footer", "feat: new config\n\nLonger body.\n\nBREAKING CHANGE: the old key is gone", BumpMajor, true, "", false},
		{"breaking footer with hyphen", "fix: x\n\nBREAKING-CHANGE: y", BumpMajor, true, "", false},
		{"lowercase breaking change is not a footer", "fix: x\n\nbreaking change: y", BumpPatch, false, "", false},
		{"multi-line body", "fix: one\n\nline one\nline two\n\nparagraph two", BumpPatch, false, "", false},
		{"footers", "fix: x\n\nReviewed-by: Z\nRefs: #123", BumpPatch, false, "", false},
		{"chore is no release", "chore: bump deps", BumpNone, false, "", false},
		{"docs is no release", "docs(readme): fix link", BumpNone, false, "readme", false},
		{"ci with bang is major", "ci!: require Go 1.26", BumpMajor, true, "", false},
		{"merge commit", "Merge pull request #12 from x/y\n\nfeat: thing", BumpNone, false, "", false},
		{"merge branch", "Merge branch 'main' into feature", BumpNone, false, "", false},
		{"squash merge keeps the header", "feat(ui): dark mode (#42)\n\n* wip\n\n* more", BumpMinor, false, "ui", false},
		{"no type", "Update README.md", BumpNone, false, "", true},
		{"no space after colon", "fix:broken", BumpNone, false, "", true},
		{"empty subject", "feat: ", BumpNone, false, "", true},
		{"space before scope", "feat (api): x", BumpNone, false, "", true},
		{"windows line endings", "fix: crlf\r\n\r\nBREAKING CHANGE: yes\r\n", BumpMajor, true, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Parse("abc1234", tc.msg)
			if got := BumpFor(c); got != tc.want {
				t.Errorf("bump = %s, want %s (%+v)", got, tc.want, c)
			}
			if c.Breaking != tc.breaking || c.Scope != tc.scope {
				t.Errorf("breaking=%v scope=%q, want %v %q", c.Breaking, c.Scope, tc.breaking, tc.scope)
			}
			if (c.Err != "") != tc.invalid {
				t.Errorf("err = %q, want invalid=%v", c.Err, tc.invalid)
			}
		})
	}
}

func TestRevertCancels(t *testing.T) {
	commits := []Commit{ // newest first
		Parse("3333333333", "Revert \"feat: risky\"\n\nThis reverts commit 1111111111."),
		Parse("2222222222", "fix: small"),
		Parse("1111111111", "feat: risky"),
	}
	v, bump, ok, err := Next(semver.MustParse("1.2.3"), commits, nil, Options{})
	if err != nil || !ok || bump != BumpPatch || v.String() != "1.2.4" {
		t.Fatalf("Next = %v %s %v %v, want 1.2.4 patch", v, bump, ok, err)
	}
	conv := []Commit{Parse("b", "revert: feat: risky"), Parse("a", "feat: risky")}
	if _, _, ok, _ := Next(semver.MustParse("1.0.0"), conv, nil, Options{}); ok {
		t.Error("a conventional revert of the only feat should leave nothing to release")
	}
}

func TestNext(t *testing.T) {
	feat, fix, brk := Parse("a", "feat: x"), Parse("b", "fix: y"), Parse("c", "feat!: z")
	pre := func(s ...string) (out []*semver.Version) {
		for _, v := range s {
			out = append(out, semver.MustParse(v))
		}
		return out
	}
	tests := []struct {
		name     string
		last     string
		commits  []Commit
		existing []*semver.Version
		opts     Options
		want     string
	}{
		{"no tags yet: 0.1.0", "", []Commit{fix}, nil, Options{}, "0.1.0"},
		{"no tags yet: configurable", "", []Commit{fix}, nil, Options{Initial: "1.0.0"}, "1.0.0"},
		{"patch", "1.2.3", []Commit{fix}, nil, Options{}, "1.2.4"},
		{"minor wins", "1.2.3", []Commit{fix, feat}, nil, Options{}, "1.3.0"},
		{"major", "1.2.3", []Commit{fix, brk}, nil, Options{}, "2.0.0"},
		{"breaking before 1.0 bumps minor when asked", "0.4.1", []Commit{brk}, nil, Options{BumpMinorPreMajor: true}, "0.5.0"},
		{"breaking before 1.0 bumps major by default", "0.4.1", []Commit{brk}, nil, Options{}, "1.0.0"},
		{"first rc", "1.3.0", []Commit{feat}, nil, Options{Channel: "rc"}, "1.4.0-rc.1"},
		{"next rc", "1.3.0", []Commit{feat}, pre("1.4.0-rc.1", "1.4.0-rc.2", "1.3.0-rc.9"), Options{Channel: "rc"}, "1.4.0-rc.3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var last *semver.Version
			if tc.last != "" {
				last = semver.MustParse(tc.last)
			}
			v, _, ok, err := Next(last, tc.commits, tc.existing, tc.opts)
			if err != nil || !ok || v.String() != tc.want {
				t.Fatalf("Next = %v %v %v, want %s", v, ok, err, tc.want)
			}
		})
	}
	if _, _, ok, _ := Next(semver.MustParse("1.0.0"), []Commit{Parse("x", "chore: y"), Parse("z", "not conventional")}, nil, Options{}); ok {
		t.Error("chore and invalid commits must not release")
	}
}

func TestNotesGolden(t *testing.T) {
	commits := []Commit{
		Parse("1111111aaaa", "feat(api)!: drop v1\n\nBREAKING CHANGE: clients must use /v2"),
		Parse("2222222bbbb", "fix(ui): button colour"),
		Parse("3333333cccc", "feat: export to CSV"),
		Parse("4444444dddd", "chore: deps"),
		Parse("5555555eeee", "perf: cache lookups"),
	}
	got := Notes("v2.0.0", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), commits, "https://git.example.test/app/commit/{hash}")
	golden := "testdata/notes.md"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, _ := os.ReadFile(golden)
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("notes differ from %s (UPDATE_GOLDEN=1 to accept) (-want +got):\n%s", golden, diff)
	}
	if !strings.Contains(PrependChangelog("# Changelog\n\n## v1.0.0\n", got), "## v2.0.0 (2026-11-25)\n\n### ⚠ BREAKING CHANGES") {
		t.Error("PrependChangelog lost the new notes' head")
	}
}
