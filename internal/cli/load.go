package cli

import (
	"context"
	"errors"
	"fmt"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/render"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/source"
)

// loaded is a checked-out, loaded repository.
type loaded struct {
	rev  source.Revision
	dir  string
	repo *model.Repo
	// opaqueSecrets reads SOPS files without decrypting them: validate
	// checks their structure where no identity is at hand, as in CI.
	opaqueSecrets bool
}

func (g *globals) load(ctx context.Context) (*loaded, error) {
	src, err := g.openSource()
	if err != nil {
		return nil, err
	}
	rev, err := src.Resolve(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := src.Checkout(ctx, rev)
	if err != nil {
		return nil, err
	}
	repo, err := model.Load(dir)
	if repo == nil {
		return nil, err
	}
	return &loaded{rev: rev, dir: dir, repo: repo}, nil
}

// renderCluster renders every component of the selected cluster and
// returns all problems together.
func (l *loaded) renderCluster(name string, ids *secret.Identities) (*model.Cluster, map[string][]render.Object, error) {
	cl, err := l.repo.Cluster(name)
	if err != nil {
		if l.repo.Problems.Err() != nil {
			return nil, nil, errors.Join(err, l.repo.Problems)
		}
		return nil, nil, err
	}
	if errs := model.ValidateCluster(l.dir, cl); len(errs) > 0 {
		return nil, nil, errs
	}
	out := map[string][]render.Object{}
	var problems model.Errors
	for _, c := range cl.Spec.Components {
		objs, err := render.Component(l.dir, c, cl.Vars(c), func(file string, data []byte) ([]byte, error) {
			if l.opaqueSecrets {
				return data, nil
			}
			return secret.Decrypt(file, data, ids)
		})
		if err != nil {
			var es model.Errors
			var e *model.Error
			switch {
			case errors.As(err, &es):
				problems = append(problems, es...)
			case errors.As(err, &e):
				problems = append(problems, e)
			default:
				problems = append(problems, &model.Error{Object: "component " + c.Name, Msg: fmt.Sprint(err)})
			}
			continue
		}
		out[c.Name] = objs
	}
	if len(problems) > 0 {
		return cl, out, problems
	}
	return cl, out, nil
}
