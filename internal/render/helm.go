package render

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	chartcommon "helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/registry"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"tend.dev/tend/internal/model"
)

// Charts fetches remote charts and keeps them: a pinned version never
// changes, so it is fetched once per process.
type Charts struct {
	// PlainHTTP allows oci:// registries over HTTP (local ones).
	PlainHTTP bool
	HTTP      *http.Client

	mu    sync.Mutex
	cache map[string]*chart.Chart
}

// DefaultCharts is used by Component for Helm components.
var DefaultCharts = &Charts{}

func (cs *Charts) get(ctx context.Context, root string, h *model.HelmChart) (*chart.Chart, error) {
	switch {
	case strings.HasPrefix(h.Chart, "oci://"), h.Repo != "":
	default:
		return loader.Load(filepath.Join(root, filepath.FromSlash(h.Chart)))
	}
	key := h.Repo + "|" + h.Chart + "|" + h.Version
	cs.mu.Lock()
	if c, ok := cs.cache[key]; ok {
		cs.mu.Unlock()
		return c, nil
	}
	cs.mu.Unlock()
	var data []byte
	var err error
	if strings.HasPrefix(h.Chart, "oci://") {
		data, err = cs.pullOCI(h)
	} else {
		data, err = cs.fetchHTTP(ctx, h)
	}
	if err != nil {
		return nil, err
	}
	c, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("load chart archive: %w", err)
	}
	cs.mu.Lock()
	if cs.cache == nil {
		cs.cache = map[string]*chart.Chart{}
	}
	cs.cache[key] = c
	cs.mu.Unlock()
	return c, nil
}

func (cs *Charts) pullOCI(h *model.HelmChart) ([]byte, error) {
	opts := []registry.ClientOption{}
	if cs.PlainHTTP {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	ref := strings.TrimPrefix(h.Chart, "oci://") + ":" + h.Version
	res, err := client.Pull(ref)
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("pull chart %s: %w", h.Chart+":"+h.Version, err), "check the chart reference, the version and that the registry is reachable")
	}
	return res.Chart.Data, nil
}

func (cs *Charts) fetchHTTP(ctx context.Context, h *model.HelmChart) ([]byte, error) {
	hc := cs.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	get := func(u string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, model.WithHint(fmt.Errorf("chart repository %s unreachable: %w", h.Repo, err), "check helm.repo and the network; tend keeps the last applied revision and retries")
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, model.WithHint(fmt.Errorf("GET %s: %s", u, resp.Status), "check helm.repo, helm.chart and helm.version")
		}
		return io.ReadAll(io.LimitReader(resp.Body, 100<<20))
	}
	base := strings.TrimSuffix(h.Repo, "/")
	idxData, err := get(base + "/index.yaml")
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp("", "tend-index-*.yaml")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	tmp.Write(idxData)
	tmp.Close()
	idx, err := repo.LoadIndexFile(tmp.Name())
	if err != nil {
		return nil, fmt.Errorf("read %s/index.yaml: %w", base, err)
	}
	cv, err := idx.Get(h.Chart, h.Version)
	if err != nil || len(cv.URLs) == 0 {
		var versions []string
		for _, v := range idx.Entries[h.Chart] {
			versions = append(versions, v.Version)
		}
		sort.Strings(versions)
		return nil, model.WithHint(fmt.Errorf("chart %s version %s is not in %s", h.Chart, h.Version, h.Repo), "available: %s", strings.Join(versions, ", "))
	}
	u, err := url.Parse(cv.URLs[0])
	if err != nil {
		return nil, err
	}
	if !u.IsAbs() {
		b, _ := url.Parse(base + "/")
		u = b.ResolveReference(u)
	}
	return get(u.String())
}

// helmComponent renders a chart with its values files.
func helmComponent(root string, c model.Component, vars map[string]string, dec Decrypter, charts *Charts) ([]Object, error) {
	h := c.Helm
	where := model.Origin{File: h.Chart}
	ch, err := charts.get(context.Background(), root, h)
	if err != nil {
		return nil, &model.Error{Origin: where, Object: "component " + c.Name, Msg: "load chart: " + err.Error(),
			Hint: firstHint(err, "check helm.chart (a path in the repository, oci://…, or a name in helm.repo) and helm.version")}
	}
	values := map[string]any{}
	for _, f := range h.Values {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			return nil, &model.Error{Origin: model.Origin{File: f}, Object: "component " + c.Name, Msg: "values file: " + err.Error(), Hint: "fix helm.values"}
		}
		if data, err = decrypt(f, data, dec); err != nil {
			return nil, err
		}
		data, errs := Substitute(f, data, vars)
		if len(errs) > 0 {
			return nil, errs
		}
		var v map[string]any
		if err := sigsyaml.Unmarshal(data, &v); err != nil {
			return nil, &model.Error{Origin: model.Origin{File: f}, Msg: "values: " + err.Error(), Hint: "a values file is a YAML mapping"}
		}
		values = chartutil.MergeTables(v, values)
	}
	name := h.ReleaseName
	if name == "" {
		name = c.Name
	}
	ns := c.Namespace
	if ns == "" {
		ns = "default"
	}
	rv, err := chartutil.ToRenderValues(ch, values, chartcommon.ReleaseOptions{Name: name, Namespace: ns, Revision: 1, IsInstall: true}, chartcommon.DefaultCapabilities)
	if err != nil {
		return nil, &model.Error{Origin: valuesOrigin(h), Object: "component " + c.Name, Msg: "chart values: " + err.Error(), Hint: "the values do not satisfy the chart's values.schema.json"}
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, &model.Error{Origin: valuesOrigin(h), Object: "component " + c.Name, Msg: "helm template: " + err.Error(),
			Hint: "the chart failed to render with these values (" + strings.Join(h.Values, ", ") + "); check the values against the chart"}
	}
	var objs []Object
	chartDir := strings.TrimSuffix(h.Chart, "/")
	for _, crd := range ch.CRDObjects() {
		o, err := Decode(path.Join(chartDir, strings.TrimPrefix(crd.Filename, ch.Name()+"/")), crd.File.Data)
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		base := path.Base(n)
		if strings.HasPrefix(base, "_") || strings.HasSuffix(n, "NOTES.txt") || strings.TrimSpace(files[n]) == "" {
			continue
		}
		o, err := Decode(path.Join(chartDir, strings.TrimPrefix(n, ch.Name()+"/")), []byte(files[n]))
		if err != nil {
			return nil, err
		}
		for _, x := range o {
			// Helm test hooks are for `helm test`, not for the cluster.
			if strings.HasPrefix(x.GetAnnotations()["helm.sh/hook"], "test") {
				continue
			}
			objs = append(objs, x)
		}
	}
	return objs, nil
}

func valuesOrigin(h *model.HelmChart) model.Origin {
	if len(h.Values) > 0 {
		return model.Origin{File: h.Values[len(h.Values)-1]}
	}
	return model.Origin{File: h.Chart}
}

func firstHint(err error, def string) string {
	if h := model.HintOf(err); h != "" {
		return h
	}
	return def
}
