package unseal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// jsonNode keeps a JSON value with its object keys in file order, which the
// MAC depends on.
type jsonNode struct {
	keys   []string // objects
	vals   []*jsonNode
	items  []*jsonNode // arrays
	array  bool
	object bool
	scalar any
}

// jsonDoc is a JSON file, or a binary file in its JSON envelope.
type jsonDoc struct {
	root   *jsonNode
	md     metadata
	binary bool
}

func parseJSON(data []byte, binary bool) (*jsonDoc, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, errors.New("the file is not a JSON object")
	}
	root, err := readObject(dec)
	if err != nil {
		return nil, err
	}
	d := &jsonDoc{root: root, binary: binary}
	found := false
	for i := 0; i < len(root.keys); i++ {
		if root.keys[i] != "sops" {
			continue
		}
		raw, err := json.Marshal(root.vals[i].plain())
		if err == nil {
			err = json.Unmarshal(raw, &d.md)
		}
		if err != nil {
			return nil, fmt.Errorf("the sops section: %w", err)
		}
		found = true
		root.keys = append(root.keys[:i], root.keys[i+1:]...)
		root.vals = append(root.vals[:i], root.vals[i+1:]...)
		i--
	}
	if !found {
		return nil, errors.New("no sops section")
	}
	return d, d.md.compile()
}

func readValue(dec *json.Decoder) (*jsonNode, error) {
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t {
	case json.Delim('{'):
		return readObject(dec)
	case json.Delim('['):
		n := &jsonNode{array: true}
		for dec.More() {
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, v)
		}
		_, err := dec.Token()
		return n, err
	}
	if num, ok := t.(json.Number); ok {
		// As the library: integers as int, the rest as float64.
		if i, err := num.Int64(); err == nil {
			return &jsonNode{scalar: int(i)}, nil
		}
		f, err := num.Float64()
		return &jsonNode{scalar: f}, err
	}
	return &jsonNode{scalar: t}, nil
}

func readObject(dec *json.Decoder) (*jsonNode, error) {
	n := &jsonNode{object: true}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("expected an object key, found %v", t)
		}
		v, err := readValue(dec)
		if err != nil {
			return nil, err
		}
		n.keys, n.vals = append(n.keys, k), append(n.vals, v)
	}
	_, err := dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// plain turns a node into maps and slices, for the sops section.
func (n *jsonNode) plain() any {
	switch {
	case n.object:
		m := map[string]any{}
		for i, k := range n.keys {
			m[k] = n.vals[i].plain()
		}
		return m
	case n.array:
		s := []any{}
		for _, it := range n.items {
			s = append(s, it.plain())
		}
		return s
	}
	return n.scalar
}

func (d *jsonDoc) metadata() *metadata { return &d.md }

func (d *jsonDoc) decrypt(w *walker) error { return d.walk(w, d.root, nil) }

func (d *jsonDoc) walk(w *walker, n *jsonNode, path []string) error {
	switch {
	case n.object:
		for i, k := range n.keys {
			if err := d.walk(w, n.vals[i], append(path[:len(path):len(path)], k)); err != nil {
				return err
			}
		}
	case n.array:
		for _, it := range n.items {
			if err := d.walk(w, it, path); err != nil {
				return err
			}
		}
	default:
		v, _, err := w.leaf(path, n.scalar)
		if err != nil {
			return err
		}
		n.scalar = v
	}
	return nil
}

// emit writes JSON as the sops CLI does (keys in order, tab indentation),
// or a binary file's bytes.
func (d *jsonDoc) emit() ([]byte, error) {
	if d.binary {
		for i, k := range d.root.keys {
			if k == "data" {
				if s, ok := d.root.vals[i].scalar.(string); ok {
					return []byte(s), nil
				}
			}
		}
		return nil, errors.New("no data in the binary file's envelope")
	}
	var compact strings.Builder
	if err := d.root.write(&compact); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, []byte(compact.String()), "", "\t"); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

func (n *jsonNode) write(b *strings.Builder) error {
	switch {
	case n.object:
		b.WriteByte('{')
		for i, k := range n.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			kb, _ := json.Marshal(k)
			b.Write(kb)
			b.WriteString(": ")
			if err := n.vals[i].write(b); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case n.array:
		b.WriteByte('[')
		for i, it := range n.items {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := it.write(b); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	default:
		v, err := json.Marshal(n.scalar)
		if err != nil {
			return err
		}
		b.Write(v)
	}
	return nil
}
