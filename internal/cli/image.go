package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"

	"tend.dev/tend/internal/image"
)

type imageFlags struct {
	insecure         bool
	registryUsername string
}

// keychain uses --registry-username with TEND_REGISTRY_PASSWORD when given,
// else the Docker config file (~/.docker/config.json), as docker and ko do.
func (f *imageFlags) keychain() authn.Keychain {
	if f.registryUsername != "" {
		return staticKeychain{&authn.Basic{Username: f.registryUsername, Password: os.Getenv("TEND_REGISTRY_PASSWORD")}}
	}
	return authn.DefaultKeychain
}

type staticKeychain struct{ a authn.Authenticator }

func (s staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return s.a, nil }

func newImage(g *globals) *cobra.Command {
	f := &imageFlags{}
	cmd := &cobra.Command{Use: "image", Short: "Build OCI images without Docker, and keep image references in the ops repository up to date"}
	cmd.PersistentFlags().BoolVar(&f.insecure, "insecure-registry", false, "allow plain-HTTP registries (local ones)")
	cmd.PersistentFlags().StringVar(&f.registryUsername, "registry-username", "", "registry user; the password comes from TEND_REGISTRY_PASSWORD (default: the Docker config file)")

	var o image.BuildOptions
	var goPkg, push string
	var labels []string
	build := &cobra.Command{
		Use:   "build",
		Short: "Build a reproducible OCI image from a Go main package, a directory or a tarball; --push REPO:TAG pushes it",
		Example: `  tend image build --go ./cmd/app --push registry.example.test/app:1.1.0
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) tend image build --go ./cmd/app --platform linux/amd64,linux/arm64 --push registry.example.test/app:1.1.0
  tend image build --dir ./public --dest /srv --base registry.example.test/nginx:1.27 --push registry.example.test/site:2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			created, err := image.CreatedFromEnv()
			if err != nil {
				return err
			}
			o.Created, o.GoPackage, o.Keychain, o.Insecure = created, goPkg, f.keychain(), f.insecure
			o.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return fmt.Errorf("--label %q: want KEY=VALUE", l)
				}
				o.Labels[k] = v
			}
			fmt.Fprintf(g.stderr, "building %s for %s\n", firstNonEmpty(o.GoPackage, o.Dir, o.Tarball), strings.Join(o.Platforms, ", "))
			res, err := image.Build(ctx, o)
			if err != nil {
				return err
			}
			out := map[string]any{"digest": res.Digest, "platforms": res.Platforms}
			if push != "" {
				fmt.Fprintf(g.stderr, "pushing %s\n", push)
				ref, err := image.Push(ctx, res, push, f.keychain(), f.insecure)
				if err != nil {
					return err
				}
				out["pushed"] = ref
			}
			if g.json() {
				return g.printJSON(out)
			}
			if r, ok := out["pushed"]; ok {
				fmt.Fprintln(g.stdout, r)
			} else {
				fmt.Fprintln(g.stdout, res.Digest)
			}
			return nil
		},
	}
	bf := build.Flags()
	bf.StringVar(&goPkg, "go", "", "Go main package to build (cross-compiled, static)")
	bf.StringVar(&o.WorkDir, "go-dir", ".", "directory of the Go module")
	bf.StringVar(&o.Dir, "dir", "", "directory to put in the image")
	bf.StringVar(&o.Dest, "dest", "/", "where --dir goes in the image")
	bf.StringVar(&o.Tarball, "tarball", "", "tar file to use as the layer")
	bf.StringVar(&o.Base, "base", "", "base image (default: empty)")
	bf.StringSliceVar(&o.Platforms, "platform", []string{"linux/amd64"}, "platforms; several make a multi-platform index")
	bf.StringVar(&o.Source, "source", "", "org.opencontainers.image.source")
	bf.StringVar(&o.Revision, "revision-label", "", "org.opencontainers.image.revision (the git commit)")
	bf.StringVar(&o.Version, "version", "", "org.opencontainers.image.version")
	bf.StringSliceVar(&labels, "label", nil, "extra KEY=VALUE labels")
	bf.StringSliceVar(&o.Entrypoint, "entrypoint", nil, "entrypoint (default /app/<name> for --go)")
	bf.StringVar(&push, "push", "", "push to REGISTRY/REPO:TAG")

	var dry bool
	update := &cobra.Command{
		Use:     "update",
		Short:   "Pick the newest tag each ImagePolicy allows, rewrite the marked references, commit and push",
		Example: `  TEND_GIT_TOKEN=… tend image update --repo https://git.example.test/ops.git`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.repo == "" {
				return fmt.Errorf("--repo is required")
			}
			so, err := g.sourceOptions()
			if err != nil {
				return err
			}
			uo := image.UpdateOptions{RepoURL: g.repo, Branch: g.revision, Keychain: f.keychain(), Insecure: f.insecure, DryRun: dry}
			if so.Token != "" || so.Password != "" {
				user, pass := so.Username, so.Password
				if so.Token != "" {
					pass = so.Token
				}
				if user == "" {
					user = "git"
				}
				uo.GitAuth = &http.BasicAuth{Username: user, Password: pass}
			}
			res, err := image.Update(cmd.Context(), uo)
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(res)
			}
			for _, c := range res.Changes {
				fmt.Fprintf(g.stdout, "%s:%d %s %s → %s\n", c.File, c.Line, c.Policy, c.From, c.To)
			}
			switch {
			case len(res.Changes) == 0:
				fmt.Fprintln(g.stdout, "images are up to date; no commit")
			case dry:
				fmt.Fprintln(g.stdout, "dry run: nothing committed")
			default:
				fmt.Fprintf(g.stdout, "pushed %.12s %q\n", res.Commit, strings.SplitN(res.Message, "\n", 2)[0])
			}
			return nil
		},
	}
	update.Flags().BoolVar(&dry, "dry-run", false, "show the rewrites without committing")
	cmd.AddCommand(build, update)
	return cmd
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
