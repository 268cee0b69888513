package cli

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"tend.dev/tend/internal/kube"
)

func newBuild(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "build",
		Short: "Render the cluster's objects to stdout, as tend would apply them",
		Example: `  tend build --repo ./ops --cluster dev
  tend build --repo ./ops --cluster dev -o json | jq '.[].kind'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.requireCluster(); err != nil {
				return err
			}
			l, err := g.load(cmd.Context())
			if err != nil {
				return err
			}
			ids, err := g.identities(cmd.Context(), nil)
			if err != nil {
				return err
			}
			cl, objs, err := l.renderCluster(g.cluster, ids)
			if err != nil {
				return err
			}
			// Secret values never reach a terminal or a CI log: they show
			// as <redacted: sha256:…>, so a change stays visible.
			for n := range objs {
				objs[n] = kube.RedactObjects(objs[n])
			}
			names := make([]string, 0, len(objs))
			for _, c := range cl.Spec.Components {
				names = append(names, c.Name)
			}
			sort.Strings(names)
			if g.json() {
				var all []map[string]any
				for _, n := range names {
					for _, o := range objs[n] {
						all = append(all, o.Object)
					}
				}
				return g.printJSON(all)
			}
			for _, n := range names {
				for _, o := range objs[n] {
					b, err := yaml.Marshal(o.Object)
					if err != nil {
						return err
					}
					fmt.Fprintf(g.stdout, "---\n# component: %s, source: %s\n%s", n, o.Origin, b)
				}
			}
			return nil
		},
	}
}
