package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/testenv"
)

func TestBuildReproducibleGo(t *testing.T) {
	ctx := context.Background()
	o := BuildOptions{GoPackage: "./testdata/hello", WorkDir: ".", Created: time.Unix(1700000000, 0).UTC(),
		Source: "https://git.example.test/hello", Revision: "abc123", Version: "1.1.0"}
	a, err := Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest {
		t.Fatalf("same inputs, different digests: %s %s", a.Digest, b.Digest)
	}
	o.Created = o.Created.Add(time.Second)
	c, _ := Build(ctx, o)
	if c.Digest == a.Digest {
		t.Error("a different SOURCE_DATE_EPOCH must change the digest")
	}
	cf, _ := a.Image.ConfigFile()
	want := map[string]string{
		"org.opencontainers.image.source": "https://git.example.test/hello", "org.opencontainers.image.revision": "abc123",
		"org.opencontainers.image.version": "1.1.0", "org.opencontainers.image.created": "2023-11-14T22:13:20Z",
	}
	for k, v := range want {
		if cf.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], v)
		}
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || cf.Config.Entrypoint[0] != "/app/hello" {
		t.Errorf("config: %s/%s %v", cf.OS, cf.Architecture, cf.Config.Entrypoint)
	}
}

func TestBuildDirMultiPlatformPush(t *testing.T) {
	ctx := context.Background()
	reg := testenv.NewRegistry(t, "", "")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<h1>hi</h1>"), 0o644)
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	res, err := Build(ctx, BuildOptions{Dir: dir, Dest: "/srv", Platforms: []string{"linux/amd64", "linux/arm64"}, Created: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Index == nil {
		t.Fatal("two platforms must give an index")
	}
	ref := reg.Host + "/web:1.0.0"
	pushed, err := Push(ctx, res, ref, authn.DefaultKeychain, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(pushed, res.Digest) {
		t.Errorf("pushed %s, built %s", pushed, res.Digest)
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	if len(m.Manifests) != 2 || m.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index manifests: %+v", m.Manifests)
	}
	d, _ := idx.Digest()
	if d.String() != res.Digest {
		t.Errorf("registry digest %s != built %s", d, res.Digest)
	}
}

func TestBuildBadInput(t *testing.T) {
	ctx := context.Background()
	authed := testenv.NewRegistry(t, "ci", "s3cret")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644)
	res, err := Build(ctx, BuildOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ref, hint string
		kc              authn.Keychain
	}{
		{"registry refuses auth", authed.Host + "/x:1", "refused the credentials", authn.DefaultKeychain},
		{"wrong password", authed.Host + "/x:1", "refused the credentials", staticKeychain{&authn.Basic{Username: "ci", Password: "nope"}}},
		{"unreachable registry", "127.0.0.1:1/x:1", "unreachable", authn.DefaultKeychain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Push(ctx, res, tc.ref, tc.kc, true)
			if err == nil || !strings.Contains(model.HintOf(err), tc.hint) {
				t.Fatalf("err = %v, hint %q, want %q", err, model.HintOf(err), tc.hint)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "nope") {
				t.Errorf("error leaks a password: %v", err)
			}
		})
	}
	if _, err := Push(ctx, res, authed.Host+"/x:1", staticKeychain{&authn.Basic{Username: "ci", Password: "s3cret"}}, true); err != nil {
		t.Errorf("push with the right credentials: %v", err)
	}
	if _, err := Build(ctx, BuildOptions{Dir: dir, Tarball: "x"}); err == nil || model.HintOf(err) == "" {
		t.Errorf("two inputs: %v", err)
	}
	if _, err := Build(ctx, BuildOptions{Dir: dir, Platforms: []string{"linux/"}}); err == nil {
		t.Error("a bad platform must fail")
	}
}

type staticKeychain struct{ a authn.Authenticator }

func (s staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return s.a, nil }

func TestBaseImageAndDockerConfigAuth(t *testing.T) {
	ctx := context.Background()
	reg := testenv.NewRegistry(t, "ci", "s3cret")
	// Credentials from a Docker config file, as `docker login` writes it.
	cfgDir := t.TempDir()
	auth := "Y2k6czNjcmV0" // base64("ci:s3cret")
	os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(`{"auths":{"`+reg.Host+`":{"auth":"`+auth+`"}}}`), 0o600)
	t.Setenv("DOCKER_CONFIG", cfgDir)

	baseDir := t.TempDir()
	os.WriteFile(filepath.Join(baseDir, "etc-release"), []byte("base"), 0o644)
	base, err := Build(ctx, BuildOptions{Dir: baseDir, Dest: "/etc"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Push(ctx, base, reg.Host+"/base:1", authn.DefaultKeychain, true); err != nil {
		t.Fatalf("push with docker config auth: %v", err)
	}
	appDir := t.TempDir()
	os.WriteFile(filepath.Join(appDir, "app"), []byte("app"), 0o755)
	res, err := Build(ctx, BuildOptions{Dir: appDir, Dest: "/app", Base: reg.Host + "/base:1", Insecure: true, Keychain: authn.DefaultKeychain})
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := res.Image.Layers()
	if len(layers) != 2 {
		t.Fatalf("image on a base has %d layers, want 2 (base + app)", len(layers))
	}
	bl, _ := base.Image.Layers()
	d0, _ := layers[0].Digest()
	b0, _ := bl[0].Digest()
	if d0 != b0 {
		t.Error("the first layer is not the base's")
	}
}
