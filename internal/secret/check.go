package secret

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"tend.dev/tend/internal/model"
)

// PlainSecrets finds Kubernetes Secrets committed unencrypted in files
// (paths relative to root), as warnings with file:line.
func PlainSecrets(root string, files []string) model.Errors {
	var out model.Errors
	for _, f := range files {
		if ext := filepath.Ext(f); ext != ".yaml" && ext != ".yml" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil || IsEncrypted(data) {
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); err != nil {
				if !errors.Is(err, io.EOF) {
					break
				}
				break
			}
			if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
				continue
			}
			n := doc.Content[0]
			kind, api, name, hasData := "", "", "", false
			for i := 0; i+1 < len(n.Content); i += 2 {
				switch n.Content[i].Value {
				case "kind":
					kind = n.Content[i+1].Value
				case "apiVersion":
					api = n.Content[i+1].Value
				case "data", "stringData":
					hasData = len(n.Content[i+1].Content) > 0
				case "metadata":
					for j := 0; j+1 < len(n.Content[i+1].Content); j += 2 {
						if n.Content[i+1].Content[j].Value == "name" {
							name = n.Content[i+1].Content[j+1].Value
						}
					}
				}
			}
			if kind == "Secret" && api == "v1" && hasData {
				out = append(out, &model.Error{Origin: model.Origin{File: filepath.ToSlash(f), Line: n.Line}, Object: "Secret/" + name, Warning: true,
					Msg: "Secret committed unencrypted", Hint: "encrypt it: tend secret encrypt " + filepath.ToSlash(f)})
			}
		}
	}
	return out
}

// RepoFiles lists the YAML files of a repository, relative to root.
func RepoFiles(root string) ([]string, error) {
	var files []string
	err := model.WalkRepo(root, func(_, rel string) error {
		files = append(files, rel)
		return nil
	})
	return files, err
}
