package unseal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlDoc is a YAML file decrypted in place in its node tree, so that
// structure, order and comments stay as the file has them.
type yamlDoc struct {
	docs []*yaml.Node
	md   metadata
}

func parseYAML(data []byte) (*yamlDoc, error) {
	d := &yamlDoc{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		d.docs = append(d.docs, &n)
	}
	var found bool
	for i, doc := range d.docs {
		if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
			if len(doc.Content) == 1 && doc.Content[0].ShortTag() == "!!null" {
				continue
			}
			return nil, fmt.Errorf("document %d is not a mapping", i+1)
		}
		m := doc.Content[0]
		for j := 0; j+1 < len(m.Content); j += 2 {
			if m.Content[j].Value != "sops" {
				continue
			}
			if i == 0 {
				if err := m.Content[j+1].Decode(&d.md); err != nil {
					return nil, fmt.Errorf("the sops section: %w", err)
				}
				found = true
			}
			m.Content = append(m.Content[:j], m.Content[j+2:]...)
			j -= 2
		}
	}
	if !found {
		return nil, errors.New("no sops section in the first document")
	}
	return d, d.md.compile()
}

func (d *yamlDoc) metadata() *metadata { return &d.md }

func (d *yamlDoc) decrypt(w *walker) error {
	for _, doc := range d.docs {
		d.comments(w, doc, nil)
		if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
			continue
		}
		if err := d.mapping(w, doc.Content[0], nil); err != nil {
			return err
		}
	}
	return nil
}

// comments decrypts a node's comments; path is the container the library
// files them under, which is also what they are authenticated with.
func (d *yamlDoc) comments(w *walker, n *yaml.Node, path []string) {
	for _, c := range []*string{&n.HeadComment, &n.LineComment, &n.FootComment} {
		if *c == "" || !strings.Contains(*c, "ENC[") {
			continue
		}
		lines := strings.Split(*c, "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "#") {
				lines[i] = "#" + w.comment(path, l[1:])
			}
		}
		*c = strings.Join(lines, "\n")
	}
}

// inline decrypts a scalar's line comment and moves what decrypted to the
// head comment of to, as the library does: a decrypted comment loses its
// place at the end of the line.
func (d *yamlDoc) inline(w *walker, v, to *yaml.Node, path []string) {
	if v.Kind != yaml.ScalarNode || !strings.Contains(v.LineComment, "ENC[") {
		return
	}
	var keep, moved []string
	for _, l := range strings.Split(v.LineComment, "\n") {
		if strings.HasPrefix(l, "#") {
			if c := w.comment(path, l[1:]); c != l[1:] {
				moved = append(moved, "#"+c)
				continue
			}
		}
		keep = append(keep, l)
	}
	v.LineComment = strings.Join(keep, "\n")
	if len(moved) > 0 {
		to.HeadComment = strings.TrimPrefix(to.HeadComment+"\n"+strings.Join(moved, "\n"), "\n")
	}
}

func (d *yamlDoc) mapping(w *walker, m *yaml.Node, path []string) error {
	d.comments(w, m, path)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		d.comments(w, k, path)
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("a key of %s is not a string", strings.Join(path, "."))
		}
		d.inline(w, v, k, path)
		if err := d.value(w, v, path, append(path[:len(path):len(path)], k.Value)); err != nil {
			return err
		}
	}
	return nil
}

// value handles v, found in the container at parent, itself at path.
func (d *yamlDoc) value(w *walker, v *yaml.Node, parent, path []string) error {
	switch v.Kind {
	case yaml.MappingNode:
		return d.mapping(w, v, path)
	case yaml.SequenceNode:
		d.comments(w, v, path)
		for _, item := range v.Content {
			d.inline(w, item, item, path)
			if err := d.value(w, item, path, path); err != nil {
				return err
			}
		}
		return nil
	case yaml.ScalarNode:
		d.comments(w, v, parent)
		var plain any
		if err := v.Decode(&plain); err != nil {
			return err
		}
		out, encrypted, err := w.leaf(path, plain)
		if err != nil || !encrypted {
			return err
		}
		head, line, foot := v.HeadComment, v.LineComment, v.FootComment
		if err := v.Encode(out); err != nil {
			return err
		}
		v.HeadComment, v.LineComment, v.FootComment = head, line, foot
		return nil
	case yaml.AliasNode:
		return errors.New("YAML aliases are not supported in encrypted files")
	}
	return nil
}

// emit writes the documents as the library does: 4-space indentation.
func (d *yamlDoc) emit() ([]byte, error) {
	var b bytes.Buffer
	e := yaml.NewEncoder(&b)
	e.SetIndent(4)
	for _, doc := range d.docs {
		if err := e.Encode(doc); err != nil {
			return nil, err
		}
	}
	if err := e.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
