package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/spf13/cobra"

	"tend.dev/tend/internal/release"
)

type releaseFlags struct {
	dir, tagPrefix, initial, channel, path, commitURL, changelog, remote string
	channelBranches                                                      []string
	preMajor, push, dryRun                                               bool
}

func (f *releaseFlags) bind(cmd *cobra.Command) {
	fl := cmd.PersistentFlags()
	fl.StringVar(&f.dir, "dir", ".", "git work tree to release")
	fl.StringVar(&f.tagPrefix, "tag-prefix", "", `tag prefix (default "v", or "<path>/v" with --path)`)
	fl.StringVar(&f.initial, "initial-version", "0.1.0", "first version when there is no tag yet")
	fl.BoolVar(&f.preMajor, "bump-minor-pre-major", false, "while the major is 0, a breaking change bumps the minor")
	fl.StringVar(&f.channel, "channel", "", `pre-release channel: "rc" makes 1.4.0-rc.1, -rc.2, …`)
	fl.StringSliceVar(&f.channelBranches, "channel-branch", nil, "BRANCH=CHANNEL: releases from BRANCH are pre-releases on CHANNEL (e.g. next=rc)")
	fl.StringVar(&f.path, "path", "", "monorepo: release only what touches this path, with its own tag prefix")
	fl.StringVar(&f.commitURL, "commit-url", "", "link commits in notes: a URL with {hash}")
}

func (f *releaseFlags) options(r *release.Repo) (release.PlanOptions, error) {
	o := release.PlanOptions{Options: release.Options{TagPrefix: f.tagPrefix, Initial: f.initial, BumpMinorPreMajor: f.preMajor, Channel: f.channel}, Path: strings.Trim(f.path, "/")}
	if o.TagPrefix == "" {
		o.TagPrefix = "v"
		if o.Path != "" {
			o.TagPrefix = path.Base(o.Path) + "/v"
		}
	}
	if len(f.channelBranches) > 0 && o.Channel == "" {
		branch, err := r.Branch()
		if err != nil {
			return o, err
		}
		for _, cb := range f.channelBranches {
			b, ch, ok := strings.Cut(cb, "=")
			if !ok {
				return o, fmt.Errorf("--channel-branch %q: want BRANCH=CHANNEL", cb)
			}
			if m, _ := path.Match(b, branch); m {
				o.Channel = ch
			}
		}
	}
	return o, nil
}

func newRelease(g *globals) *cobra.Command {
	f := &releaseFlags{}
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Cut a semantic release from Conventional Commits: changelog, commit, annotated tag; exit 1 when there is nothing to release",
		Example: `  tend release --dry-run
  tend release --push
  tend release --path services/api          # tags api/v1.2.0 from commits touching services/api`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := release.Open(f.dir)
			if err != nil {
				return err
			}
			o, err := f.options(r)
			if err != nil {
				return err
			}
			if f.dryRun {
				p, err := r.Plan(o)
				if err != nil {
					return err
				}
				return g.showPlan(p, f)
			}
			ro := release.ReleaseOptions{PlanOptions: o, Changelog: f.changelog, CommitURL: f.commitURL, Push: f.push, Remote: f.remote}
			if tok := os.Getenv("TEND_GIT_TOKEN"); tok != "" {
				user := os.Getenv("TEND_GIT_USERNAME")
				if user == "" {
					user = "git"
				}
				ro.Auth = &http.BasicAuth{Username: user, Password: tok}
			}
			res, err := r.Release(ro)
			if err != nil {
				return err
			}
			if g.json() {
				if err := g.printJSON(res); err != nil {
					return err
				}
			} else if res.Releasable() {
				fmt.Fprintf(g.stdout, "released %s (%s bump, %d commits since %s)\n", res.Tag, res.Bump, len(res.Commits), orNone(res.LastTag))
				if res.Pushed {
					fmt.Fprintf(g.stdout, "pushed the release commit and tag %s\n", res.Tag)
				}
			}
			if !res.Releasable() {
				if !g.json() {
					fmt.Fprintf(g.stderr, "nothing to release since %s: no feat, fix or breaking change\n", orNone(res.LastTag))
				}
				return notClean{Msg: "nothing to release"}
			}
			return nil
		},
	}
	f.bind(cmd)
	cmd.Flags().BoolVar(&f.push, "push", false, "push the release commit and tag")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "show the version, notes and commits without writing")
	cmd.Flags().StringVar(&f.changelog, "changelog", "CHANGELOG.md", "changelog file to prepend to")
	cmd.Flags().StringVar(&f.remote, "remote", "origin", "remote to push to")

	next := &cobra.Command{
		Use:   "next",
		Short: "Print the next version; exit 1 when there is nothing to release",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := planFor(f)
			if err != nil {
				return err
			}
			if g.json() {
				if err := g.printJSON(p); err != nil {
					return err
				}
			} else if p.Releasable() {
				fmt.Fprintln(g.stdout, p.Version)
			} else {
				fmt.Fprintf(g.stderr, "nothing to release since %s\n", orNone(p.LastTag))
			}
			g.noteIgnored(p)
			if !p.Releasable() {
				return notClean{Msg: "nothing to release"}
			}
			return nil
		},
	}
	notes := &cobra.Command{
		Use:   "notes",
		Short: "Print the Markdown release notes of the next version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := planFor(f)
			if err != nil {
				return err
			}
			if !p.Releasable() {
				fmt.Fprintf(g.stderr, "nothing to release since %s\n", orNone(p.LastTag))
				return notClean{Msg: "nothing to release"}
			}
			fmt.Fprint(g.stdout, release.Notes(p.Tag, time.Now(), p.Commits, f.commitURL))
			return nil
		},
	}
	var msgFile string
	lint := &cobra.Command{
		Use:   "lint [RANGE]",
		Short: "Check commit messages: a range (origin/main..HEAD), a message file (commit-msg hook) or stdin (-)",
		Example: `  tend release lint origin/main..HEAD
  tend release lint --message-file .git/COMMIT_EDITMSG     # in .git/hooks/commit-msg: tend release lint --message-file "$1"
  git log -1 --format=%B | tend release lint -`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var commits []release.Commit
			switch {
			case msgFile != "" || (len(args) == 1 && args[0] == "-"):
				var data []byte
				var err error
				if msgFile != "" {
					data, err = os.ReadFile(msgFile)
				} else {
					data, err = io.ReadAll(cmd.InOrStdin())
				}
				if err != nil {
					return err
				}
				commits = []release.Commit{release.Parse("", stripComments(string(data)))}
			default:
				r, err := release.Open(f.dir)
				if err != nil {
					return err
				}
				spec := "HEAD"
				if len(args) == 1 {
					spec = args[0]
				}
				commits, err = r.Range(spec)
				if err != nil {
					return err
				}
			}
			var bad []release.Commit
			for _, c := range commits {
				if !c.Merge && c.Err != "" {
					bad = append(bad, c)
				}
			}
			if g.json() {
				if err := g.printJSON(map[string]any{"checked": len(commits), "violations": bad}); err != nil {
					return err
				}
			} else {
				for _, c := range bad {
					id := c.Hash
					if len(id) > 7 {
						id = id[:7] + " "
					}
					fmt.Fprintf(g.stderr, "✗ %s%q: %s\n", id, c.Header, c.Err)
				}
				fmt.Fprintf(g.stdout, "%d commits checked, %d not Conventional Commits\n", len(commits), len(bad))
			}
			if len(bad) > 0 {
				return silentErr{Err: errors.New("lint")}
			}
			return nil
		},
	}
	lint.Flags().StringVar(&msgFile, "message-file", "", "check the message in this file (a commit-msg hook's $1)")
	cmd.AddCommand(next, notes, lint)
	return cmd
}

func planFor(f *releaseFlags) (*release.Plan, error) {
	r, err := release.Open(f.dir)
	if err != nil {
		return nil, err
	}
	o, err := f.options(r)
	if err != nil {
		return nil, err
	}
	return r.Plan(o)
}

func (g *globals) showPlan(p *release.Plan, f *releaseFlags) error {
	if g.json() {
		return g.printJSON(p)
	}
	g.noteIgnored(p)
	if !p.Releasable() {
		fmt.Fprintf(g.stderr, "nothing to release since %s\n", orNone(p.LastTag))
		return notClean{Msg: "nothing to release"}
	}
	fmt.Fprintf(g.stdout, "would release %s (%s bump, %d commits since %s)\n", p.Tag, p.Bump, len(p.Commits), orNone(p.LastTag))
	fmt.Fprintf(g.stdout, "would commit \"chore(release): %s\" with CHANGELOG.md and tag %s\n\n", p.Tag, p.Tag)
	fmt.Fprint(g.stdout, release.Notes(p.Tag, time.Now(), p.Commits, f.commitURL))
	return nil
}

func (g *globals) noteIgnored(p *release.Plan) {
	for _, t := range p.Ignored {
		fmt.Fprintf(g.stderr, "note: tag %s is not semver; ignored\n", t)
	}
	for _, c := range p.Invalid {
		fmt.Fprintf(g.stderr, "note: %.7s %q is not a Conventional Commit (%s); it counts as no release\n", c.Hash, c.Header, c.Err)
	}
}

func orNone(s string) string {
	if s == "" {
		return "the first commit"
	}
	return s
}

// stripComments drops git's # comment lines from a commit message file.
func stripComments(s string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		out = append(out, sc.Text())
	}
	return strings.Join(out, "\n")
}
