// Package render turns a component directory into Kubernetes objects: plain
// YAML files, or a kustomization built in-process with sigs.k8s.io/kustomize,
// followed by ${var} substitution. Errors name the file and line.
package render

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret"
)

// Object is a rendered object and where it came from.
type Object struct {
	*unstructured.Unstructured
	Origin model.Origin
}

// ID names an object for messages: Kind/namespace/name.
func (o Object) ID() string {
	if ns := o.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s/%s/%s", o.GetKind(), ns, o.GetName())
	}
	return fmt.Sprintf("%s/%s", o.GetKind(), o.GetName())
}

var kustomizationFiles = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// Decrypter decrypts a SOPS-encrypted file in memory; file is relative to
// the repository root. It must fail rather than return partial data.
type Decrypter func(file string, data []byte) ([]byte, error)

// Component renders the component c of a repository checked out at root.
// Encrypted files are decrypted with dec in memory; with dec nil they are
// an error, so ciphertext is never applied as data.
func Component(root string, c model.Component, vars map[string]string, dec Decrypter) ([]Object, error) {
	if c.Helm != nil {
		objs, err := helmComponent(root, c, vars, dec, DefaultCharts)
		if err != nil {
			return nil, err
		}
		return objs, checkObjects(objs)
	}
	dir := filepath.Join(root, filepath.FromSlash(c.Path))
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return nil, &model.Error{Origin: model.Origin{File: c.Path}, Object: "component " + c.Name,
			Msg: "path does not exist or is not a directory", Hint: "create the directory or fix spec.components[].path"}
	}
	var objs []Object
	for _, k := range kustomizationFiles {
		if _, err := os.Stat(filepath.Join(dir, k)); err == nil {
			objs, err = kustomize(root, dir, filepath.ToSlash(filepath.Join(c.Path, k)), vars, dec)
			if err != nil {
				return nil, err
			}
			return objs, checkObjects(objs)
		}
	}
	objs, err = plain(root, dir, vars, dec)
	if err != nil {
		return nil, err
	}
	return objs, checkObjects(objs)
}

func plain(root, dir string, vars map[string]string, dec Decrypter) ([]Object, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".json":
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var objs []Object
	var errs model.Errors
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(root, f)
		rel = filepath.ToSlash(rel)
		if data, err = decrypt(rel, data, dec); err != nil {
			errs = append(errs, asErrors(err)...)
			continue
		}
		data, serrs := Substitute(rel, data, vars)
		if len(serrs) > 0 {
			errs = append(errs, serrs...)
			continue
		}
		o, err := Decode(rel, data)
		if err != nil {
			var me model.Errors
			if errors.As(err, &me) {
				errs = append(errs, me...)
				continue
			}
			return nil, err
		}
		objs = append(objs, o...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return objs, nil
}

func kustomize(root, dir, kfile string, vars map[string]string, dec Decrypter) ([]Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	fsys, err := kustomizeFS(root, dec)
	if err != nil {
		return nil, err
	}
	rm, err := k.Run(fsys, dir)
	if err != nil {
		return nil, &model.Error{Origin: model.Origin{File: kfile}, Msg: "kustomize build: " + strings.ReplaceAll(err.Error(), root+"/", ""),
			Hint: "check the files and bases the kustomization lists; `tend build` shows the rendered output once it builds"}
	}
	out, err := rm.AsYaml()
	if err != nil {
		return nil, &model.Error{Origin: model.Origin{File: kfile}, Msg: "kustomize output: " + err.Error()}
	}
	out, serrs := Substitute(kfile+" (built)", out, vars)
	if len(serrs) > 0 {
		return nil, serrs
	}
	objs, err := Decode(kfile, out)
	if err != nil {
		return nil, err
	}
	for i := range objs {
		objs[i].Origin = model.Origin{File: kfile}
	}
	return objs, nil
}

// Decode reads the Kubernetes objects in a multi-document YAML file. Documents
// that are tend kinds are skipped: they describe tend, not the cluster.
func Decode(file string, data []byte) ([]Object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []Object
	var errs model.Errors
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, model.Errors{model.YAMLError(file, err)}
		}
		if len(doc.Content) == 0 {
			continue
		}
		n := doc.Content[0]
		origin := model.Origin{File: file, Line: n.Line}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			continue
		}
		if n.Kind != yaml.MappingNode {
			errs = append(errs, &model.Error{Origin: origin, Msg: "a manifest must be a mapping with apiVersion, kind and metadata",
				Hint: "remove the document or make it a Kubernetes object"})
			continue
		}
		raw, err := yaml.Marshal(n)
		if err != nil {
			return nil, err
		}
		js, err := sigsyaml.YAMLToJSON(raw)
		if err != nil {
			errs = append(errs, &model.Error{Origin: origin, Msg: "convert to JSON: " + err.Error()})
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			msg := err.Error()
			hint := "every object needs apiVersion, kind and metadata.name"
			errs = append(errs, &model.Error{Origin: origin, Msg: "not a Kubernetes object: " + msg, Hint: hint})
			continue
		}
		if strings.HasPrefix(u.GetAPIVersion(), model.Group+"/") {
			continue
		}
		if u.IsList() {
			l, _ := u.ToList()
			for i := range l.Items {
				objs = append(objs, Object{Unstructured: &l.Items[i], Origin: origin})
			}
			continue
		}
		objs = append(objs, Object{Unstructured: u, Origin: origin})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return objs, nil
}

func checkObjects(objs []Object) error {
	var errs model.Errors
	seen := map[string]model.Origin{}
	for _, o := range objs {
		switch {
		case o.GetAPIVersion() == "":
			errs = append(errs, &model.Error{Origin: o.Origin, Object: o.ID(), Msg: "apiVersion is missing", Hint: "set apiVersion, e.g. v1 or apps/v1"})
		case o.GetKind() == "":
			errs = append(errs, &model.Error{Origin: o.Origin, Msg: "kind is missing", Hint: "set kind, e.g. ConfigMap"})
		case o.GetName() == "":
			errs = append(errs, &model.Error{Origin: o.Origin, Object: o.GetKind(), Msg: "metadata.name is missing", Hint: "give the object a name"})
		}
		gk := o.GroupVersionKind().GroupKind()
		key := gk.String() + "/" + o.GetNamespace() + "/" + o.GetName()
		if prev, ok := seen[key]; ok {
			errs = append(errs, &model.Error{Origin: o.Origin, Object: o.ID(), Msg: "defined twice in the component; also at " + prev.String(),
				Hint: "keep one definition"})
		}
		seen[key] = o.Origin
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func decrypt(file string, data []byte, dec Decrypter) ([]byte, error) {
	if !secret.IsEncrypted(data) {
		return data, nil
	}
	if dec == nil {
		return nil, &model.Error{Origin: model.Origin{File: file}, Msg: "SOPS-encrypted file, and tend has no age identity",
			Hint: "pass --age-identity FILE or set TEND_AGE_KEY; tend never applies ciphertext as data"}
	}
	return dec(file, data)
}

func asErrors(err error) model.Errors {
	var es model.Errors
	var e *model.Error
	switch {
	case errors.As(err, &es):
		return es
	case errors.As(err, &e):
		return model.Errors{e}
	}
	return model.Errors{{Msg: err.Error()}}
}

// kustomizeFS is the disk, or, when the repository holds SOPS files, an
// in-memory copy of it with those files decrypted: kustomize reads them
// decrypted and the plaintext never touches the disk.
func kustomizeFS(root string, dec Decrypter) (filesys.FileSystem, error) {
	var encrypted []string
	err := model.WalkRepo(root, func(p, _ string) error {
		if ext := filepath.Ext(p); ext == ".yaml" || ext == ".yml" {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if secret.IsEncrypted(data) {
				encrypted = append(encrypted, p)
			}
		}
		return nil
	})
	if err != nil || len(encrypted) == 0 {
		return filesys.MakeFsOnDisk(), err
	}
	mem := filesys.MakeFsInMemory()
	var errs model.Errors
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return mem.MkdirAll(p)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		data, err = decrypt(filepath.ToSlash(rel), data, dec)
		if err != nil {
			errs = append(errs, asErrors(err)...)
			return nil
		}
		return mem.WriteFile(p, data)
	})
	if err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return mem, nil
}
