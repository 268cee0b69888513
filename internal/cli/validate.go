package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret"
)

type validateResult struct {
	Revision string             `json:"revision"`
	Clusters []validatedCluster `json:"clusters"`
	Problems model.Errors       `json:"problems"`
	Valid    bool               `json:"valid"`
}

type validatedCluster struct {
	Name       string `json:"name"`
	Origin     string `json:"origin"`
	Components int    `json:"components"`
	Objects    int    `json:"objects"`
}

func newValidate(g *globals) *cobra.Command {
	var strict bool
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check the repository: schema, references, cycles and rendering, with file:line and a hint for each problem",
		Example: `  tend validate --repo ./ops
  tend validate --repo ./ops --cluster dev -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := g.load(cmd.Context())
			if err != nil {
				return err
			}
			ids, err := g.identities(cmd.Context(), nil)
			if err != nil {
				return err
			}
			l.opaqueSecrets = ids.Len() == 0
			res := validateResult{Revision: l.rev.String(), Problems: append(model.Errors{}, l.repo.Problems...)}
			files, err := secret.RepoFiles(l.dir)
			if err != nil {
				return err
			}
			for _, w := range secret.PlainSecrets(l.dir, files) {
				w.Warning = !strict
				res.Problems = append(res.Problems, w)
			}
			for _, cl := range l.repo.Clusters {
				if g.cluster != "" && cl.Metadata.Name != g.cluster {
					continue
				}
				_, objs, err := l.renderCluster(cl.Metadata.Name, ids)
				var es model.Errors
				if errors.As(err, &es) {
					res.Problems = appendNew(res.Problems, es...)
				} else if err != nil {
					res.Problems = append(res.Problems, &model.Error{Msg: err.Error(), Hint: model.HintOf(err)})
				}
				n := 0
				for _, o := range objs {
					n += len(o)
				}
				res.Clusters = append(res.Clusters, validatedCluster{Name: cl.Metadata.Name, Origin: cl.Origin.String(), Components: len(cl.Spec.Components), Objects: n})
			}
			if g.cluster != "" && len(res.Clusters) == 0 {
				_, err := l.repo.Cluster(g.cluster)
				return err
			}
			res.Valid = res.Problems.Err() == nil
			if g.json() {
				if err := g.printJSON(res); err != nil {
					return err
				}
				if !res.Valid {
					return notCleanErr(ExitError)
				}
				return nil
			}
			for _, c := range res.Clusters {
				fmt.Fprintf(g.stdout, "Cluster %s (%s): %d components, %d objects\n", c.Name, c.Origin, c.Components, c.Objects)
			}
			if len(res.Clusters) == 0 {
				fmt.Fprintf(g.stdout, "no Cluster found in %s\n", g.repo)
			}
			if len(res.Problems) > 0 {
				printError(g.stderr, res.Problems)
			}
			if !res.Valid {
				return silentErr{Err: fmt.Errorf("%d problems", len(res.Problems.Err().(model.Errors)))}
			}
			fmt.Fprintln(g.stdout, "valid")
			return nil
		},
	}
	cmd.Flags().BoolVar(&strict, "strict", false, "treat warnings (such as a Secret committed unencrypted) as errors")
	return cmd
}

// appendNew skips problems already listed (a file shared by two clusters).
func appendNew(list model.Errors, add ...*model.Error) model.Errors {
	seen := map[string]bool{}
	for _, e := range list {
		seen[e.Error()] = true
	}
	for _, e := range add {
		if !seen[e.Error()] {
			list = append(list, e)
			seen[e.Error()] = true
		}
	}
	return list
}

func notCleanErr(code int) error {
	if code == ExitNotClean {
		return notClean{}
	}
	return silentErr{Err: errors.New("invalid")}
}
