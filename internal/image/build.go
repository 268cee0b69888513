// Package image builds OCI images without Docker and keeps image references
// in the ops repository up to date. Builds use go-containerregistry: a Go
// main package is cross-compiled statically, a directory or tarball becomes
// a layer, on a base image from a registry or on an empty base. The same
// inputs give the same digest: file times come from SOURCE_DATE_EPOCH.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"tend.dev/tend/internal/model"
)

// BuildOptions describe one image.
type BuildOptions struct {
	// Exactly one input: a Go main package (built with the go toolchain),
	// a directory, or a tarball.
	GoPackage, Dir, Tarball string
	// WorkDir is where the go build runs (the module), default ".".
	WorkDir string
	// Base is a registry reference; empty means an empty base.
	Base string
	// Platforms like linux/amd64; several make an index.
	Platforms []string
	// Created is the image's creation time and every file's mtime.
	Created time.Time
	// Source, Revision and Version fill the org.opencontainers.image labels.
	Source, Revision, Version string
	Labels                    map[string]string
	// Dest is where Dir or Tarball content goes in the image (default /).
	Dest string
	// Entrypoint overrides the default (/app/<name> for a Go package).
	Entrypoint []string
	// Auth for the base image registry.
	Keychain authn.Keychain
	Insecure bool
}

// Result is a built image or index.
type Result struct {
	Image  v1.Image      `json:"-"`
	Index  v1.ImageIndex `json:"-"`
	Digest string        `json:"digest"`
	// Platforms built, in order.
	Platforms []string `json:"platforms"`
}

// CreatedFromEnv returns SOURCE_DATE_EPOCH as a time, or the zero epoch
// (1970-01-01) so that builds are reproducible by default.
func CreatedFromEnv() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	var sec int64
	if _, err := fmt.Sscanf(s, "%d", &sec); err != nil {
		return time.Time{}, model.WithHint(fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err), "set it to seconds since 1970, e.g. $(git log -1 --format=%%ct)")
	}
	return time.Unix(sec, 0).UTC(), nil
}

// Build builds the image for each platform.
func Build(ctx context.Context, o BuildOptions) (*Result, error) {
	n := 0
	for _, in := range []string{o.GoPackage, o.Dir, o.Tarball} {
		if in != "" {
			n++
		}
	}
	if n != 1 {
		return nil, model.WithHint(fmt.Errorf("build needs exactly one input"), "pass one of --go PACKAGE, --dir DIR or --tarball FILE")
	}
	if len(o.Platforms) == 0 {
		o.Platforms = []string{"linux/amd64"}
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	res := &Result{Platforms: o.Platforms}
	var adds []mutate.IndexAddendum
	for _, p := range o.Platforms {
		plat, err := v1.ParsePlatform(p)
		if err == nil && (plat.OS == "" || plat.Architecture == "") {
			err = fmt.Errorf("os and architecture are required")
		}
		if err != nil {
			return nil, model.WithHint(fmt.Errorf("platform %q: %w", p, err), "write os/arch[/variant], e.g. linux/arm64")
		}
		img, err := buildOne(ctx, o, plat)
		if err != nil {
			return nil, err
		}
		if len(o.Platforms) == 1 {
			res.Image = img
			d, err := img.Digest()
			if err != nil {
				return nil, err
			}
			res.Digest = d.String()
			return res, nil
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	d, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	res.Index, res.Digest = idx, d.String()
	return res, nil
}

func buildOne(ctx context.Context, o BuildOptions, plat *v1.Platform) (v1.Image, error) {
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	if o.Base != "" {
		ref, err := name.ParseReference(o.Base, nameOpts(o.Insecure)...)
		if err != nil {
			return nil, model.WithHint(fmt.Errorf("base %q: %w", o.Base, err), "write a reference like registry.example.test/base:1.0")
		}
		b, err := remote.Image(ref, remote.WithContext(ctx), remote.WithPlatform(*plat), remote.WithAuthFromKeychain(o.Keychain))
		if err != nil {
			return nil, registryError("pull base "+o.Base, err)
		}
		base = b
	}
	var files []file
	entry := o.Entrypoint
	switch {
	case o.GoPackage != "":
		bin, err := goBuild(ctx, o, plat)
		if err != nil {
			return nil, err
		}
		name := path.Base(strings.TrimSuffix(o.GoPackage, "/"))
		if name == "." || name == "" {
			name = "app"
		}
		files = []file{{name: "app", dir: true, mode: 0o755}, {name: "app/" + name, data: bin, mode: 0o755}}
		if entry == nil {
			entry = []string{"/app/" + name}
		}
	case o.Dir != "":
		fs, err := readDir(o.Dir, o.Dest)
		if err != nil {
			return nil, err
		}
		files = fs
	}
	var layer v1.Layer
	var err error
	if o.Tarball != "" {
		data, rerr := os.ReadFile(o.Tarball)
		if rerr != nil {
			return nil, rerr
		}
		layer, err = tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, tarball.WithMediaType(types.OCILayer))
	} else {
		data, terr := tarFiles(files, o.Created)
		if terr != nil {
			return nil, terr
		}
		layer, err = tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, tarball.WithMediaType(types.OCILayer))
	}
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "tend image build", Created: v1.Time{Time: o.Created}}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	if entry != nil {
		cf.Config.Entrypoint = entry
	}
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	for k, v := range o.Labels {
		cf.Config.Labels[k] = v
	}
	for k, v := range map[string]string{"source": o.Source, "revision": o.Revision, "version": o.Version} {
		if v != "" {
			cf.Config.Labels["org.opencontainers.image."+k] = v
		}
	}
	cf.Config.Labels["org.opencontainers.image.created"] = o.Created.UTC().Format(time.RFC3339)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: o.Created})
}

func goBuild(ctx context.Context, o BuildOptions, plat *v1.Platform) ([]byte, error) {
	out, err := os.MkdirTemp("", "tend-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(out)
	bin := filepath.Join(out, "app")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", bin, o.GoPackage)
	cmd.Dir = o.WorkDir
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS="+plat.OS, "GOARCH="+plat.Architecture)
	if plat.Architecture == "arm" && strings.HasPrefix(plat.Variant, "v") {
		env = append(env, "GOARM="+strings.TrimPrefix(plat.Variant, "v"))
	}
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, model.WithHint(fmt.Errorf("go build %s for %s/%s: %w\n%s", o.GoPackage, plat.OS, plat.Architecture, err, b), "the package must be a main package that builds with CGO_ENABLED=0")
	}
	return os.ReadFile(bin)
}

type file struct {
	name     string
	data     []byte
	mode     int64
	dir      bool
	linkname string
}

func readDir(root, dest string) ([]file, error) {
	dest = strings.Trim(path.Clean("/"+dest), "/")
	var out []file
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		name := path.Join(dest, filepath.ToSlash(rel))
		if rel == "." {
			if dest == "" {
				return nil
			}
			name = dest
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			out = append(out, file{name: name, dir: true, mode: 0o755})
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, file{name: name, linkname: target, mode: 0o777})
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			mode := int64(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			out = append(out, file{name: name, data: data, mode: mode})
		}
		return nil
	})
	return out, err
}

// tarFiles writes a tar whose bytes depend only on the files: sorted names,
// fixed times, root ownership, normalised modes.
func tarFiles(files []file, mtime time.Time) ([]byte, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: mtime, Format: tar.FormatPAX, Uname: "root", Gname: "root"}
		switch {
		case f.dir:
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		case f.linkname != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.linkname
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func nameOpts(insecure bool) []name.Option {
	if insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// Push writes the result to ref ("registry/repo:tag").
func Push(ctx context.Context, res *Result, ref string, kc authn.Keychain, insecure bool) (string, error) {
	r, err := name.ParseReference(ref, nameOpts(insecure)...)
	if err != nil {
		return "", model.WithHint(fmt.Errorf("push to %q: %w", ref, err), "write REGISTRY/REPOSITORY:TAG")
	}
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	if res.Index != nil {
		err = remote.WriteIndex(r, res.Index, opts...)
	} else {
		err = remote.Write(r, res.Image, opts...)
	}
	if err != nil {
		return "", registryError("push "+ref, err)
	}
	return r.Context().Digest(res.Digest).String(), nil
}

func registryError(op string, err error) error {
	wrapped := fmt.Errorf("%s: %w", op, err)
	s := err.Error()
	switch {
	case strings.Contains(s, "UNAUTHORIZED") || strings.Contains(s, "401") || strings.Contains(s, "DENIED") || strings.Contains(s, "403"):
		return model.WithHint(wrapped, "the registry refused the credentials: log in (docker config ~/.docker/config.json) or pass --registry-username with TEND_REGISTRY_PASSWORD")
	case strings.Contains(s, "connection refused") || strings.Contains(s, "no such host") || strings.Contains(s, "timeout"):
		return model.WithHint(wrapped, "the registry is unreachable: check the address and network")
	}
	return wrapped
}
