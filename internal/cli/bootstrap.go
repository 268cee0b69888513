package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"tend.dev/tend/internal/bootstrap"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
)

func newBootstrap(g *globals) *cobra.Command {
	var o bootstrap.Options
	var write, webhookSecretFile string
	var printOnly bool
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Install the tend agent into a cluster and hand over to it; the agent then manages itself from git",
		Example: `  # write the agent's component into the ops work tree, install it, then commit the component
  TEND_GIT_TOKEN=… tend bootstrap --repo https://git.example.test/ops.git --cluster prod \
      --image registry.example.test/tend:1.2.0 --write ./ops --age-identity prod.agekey
  tend bootstrap --repo … --cluster prod --image … --print    # only print the manifests`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if g.repo == "" || g.cluster == "" || o.Image == "" {
				return model.WithHint(fmt.Errorf("--repo, --cluster and --image are required"), "the agent needs the ops repository URL, its Cluster name and tend's image")
			}
			o.RepoURL, o.Cluster, o.Revision = g.repo, g.cluster, g.revision
			if o.Path == "" {
				o.Path = bootstrap.ComponentName
			}
			manifests := bootstrap.Manifests(o)
			if printOnly {
				fmt.Fprint(g.stdout, manifests)
				return nil
			}
			if write != "" {
				file := filepath.Join(write, o.Path, "tend.yaml")
				if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					return err
				}
				if err := writeAtomic(file, []byte(manifests)); err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "wrote %s\n", file)
			}
			so, err := g.sourceOptions()
			if err != nil {
				return err
			}
			o.GitUsername, o.GitToken = so.Username, firstNonEmpty(so.Token, so.Password)
			if g.ageIdentity != "" {
				if o.AgeIdentity, err = os.ReadFile(g.ageIdentity); err != nil {
					return err
				}
			}
			if webhookSecretFile != "" {
				b, err := os.ReadFile(webhookSecretFile)
				if err != nil {
					return err
				}
				o.WebhookSecret = strings.TrimSpace(string(b))
			}
			c, err := g.kubeClient()
			if err != nil {
				return err
			}
			if err := c.Ping(ctx); err != nil {
				return err
			}
			res, err := bootstrap.Apply(ctx, c, o)
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(res)
			}
			cs := res.Changes
			fmt.Fprintf(g.stdout, "agent installed in %s: %d created, %d configured, %d unchanged\n", kube.Namespace,
				cs.Count(kube.Created), cs.Count(kube.Configured), cs.Count(kube.Unchanged))
			for _, s := range res.Secrets {
				fmt.Fprintf(g.stdout, "secret %s/%s written (never in git)\n", kube.Namespace, s)
			}
			fmt.Fprintf(g.stdout, "\nCommit the component and list it in Cluster %s, so the agent manages itself:\n  - name: %s\n    path: %s\n",
				o.Cluster, bootstrap.ComponentName, o.Path)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Image, "image", "", "tend image for the agent, e.g. registry.example.test/tend:1.2.0")
	f.IntVar(&o.Replicas, "replicas", 2, "agent replicas (one leads, the others stand by)")
	f.StringVar(&o.Path, "path", "tend", "where the agent's component lives in the ops repository")
	f.StringVar(&write, "write", "", "ops repository work tree to write the component into")
	f.StringVar(&webhookSecretFile, "webhook-secret-file", "", "secret for the agent's push webhook")
	f.BoolVar(&printOnly, "print", false, "print the manifests and stop")
	cmd.AddCommand(newBootstrapMachines(g))
	return cmd
}
