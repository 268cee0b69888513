package image

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Change is one image reference rewritten in a file.
type Change struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Policy string `json:"policy"`
	Image  string `json:"image"`
	From   string `json:"from"`
	To     string `json:"to"`
}

// markerRe finds a setter marker like Flux's: # {"$imagepolicy": "shop"},
// "shop:tag" or "shop:name". A namespace prefix ("ns:shop") is accepted and
// ignored, so Flux markers work as they are.
var markerRe = regexp.MustCompile(`#\s*\{\s*"\$imagepolicy"\s*:\s*"([^"]+)"\s*\}`)

// Selected maps policy names to their image and chosen tag.
type Selected map[string]struct{ Image, Tag string }

// Rewrite updates the image references in one YAML file: lines carrying a
// marker, and `images:` entries of a kustomization naming a policy's image.
// It edits lines in place, so comments and formatting survive. Pure.
func Rewrite(file string, data []byte, sel Selected) ([]byte, []Change) {
	lines := bytes.SplitAfter(data, []byte("\n"))
	var changes []Change
	for i, l := range lines {
		m := markerRe.FindSubmatchIndex(l)
		if m == nil {
			continue
		}
		ref := string(l[m[2]:m[3]])
		parts := strings.Split(ref, ":")
		policy, field := parts[0], ""
		switch len(parts) {
		case 2:
			if parts[1] == "tag" || parts[1] == "name" {
				field = parts[1]
			} else {
				policy = parts[1] // namespace:name, as Flux writes it
			}
		case 3:
			policy, field = parts[1], parts[2]
		}
		s, ok := sel[policy]
		if !ok {
			continue
		}
		value := s.Image + ":" + s.Tag
		switch field {
		case "tag":
			value = s.Tag
		case "name":
			value = s.Image
		}
		before := l[:m[0]]
		colon := bytes.LastIndex(before, []byte(": "))
		dash := bytes.LastIndex(before, []byte("- "))
		start := max(colon, dash)
		if start < 0 {
			continue
		}
		start += 2
		old := strings.TrimSpace(string(before[start:]))
		quote := ""
		if len(old) > 1 && (old[0] == '"' || old[0] == '\'') {
			quote = old[:1]
			old = strings.Trim(old, `"'`)
		}
		if old == value {
			continue
		}
		newLine := append([]byte{}, before[:start]...)
		newLine = append(newLine, []byte(quote+value+quote+" ")...)
		newLine = append(newLine, l[m[0]:]...)
		lines[i] = newLine
		changes = append(changes, Change{File: file, Line: i + 1, Policy: policy, Image: s.Image, From: tagOf(old, field), To: s.Tag})
	}
	data = bytes.Join(lines, nil)
	if kc := kustomizeImages(file, data, sel); len(kc) > 0 {
		lines = bytes.SplitAfter(data, []byte("\n"))
		for _, c := range kc {
			l := lines[c.Line-1]
			i := bytes.Index(l, []byte("newTag:"))
			eol := len(l)
			if bytes.HasSuffix(l, []byte("\n")) {
				eol--
			}
			rest := l[i+len("newTag:") : eol]
			comment := ""
			if j := bytes.Index(rest, []byte(" #")); j >= 0 {
				comment = string(rest[j:])
			}
			lines[c.Line-1] = []byte(fmt.Sprintf("%snewTag: %q%s%s", l[:i], c.To, comment, l[eol:]))
		}
		data = bytes.Join(lines, nil)
		changes = append(changes, kc...)
	}
	return data, changes
}

func tagOf(ref, field string) string {
	if field == "tag" {
		return ref
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return ""
}

// kustomizeImages finds newTag values to change in a kustomization's
// images: list, for entries whose name (or newName) is a policy's image.
func kustomizeImages(file string, data []byte, sel Selected) []Change {
	if !strings.HasSuffix(file, "kustomization.yaml") && !strings.HasSuffix(file, "kustomization.yml") {
		return nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	var images *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "images" {
			images = root.Content[i+1]
		}
	}
	if images == nil || images.Kind != yaml.SequenceNode {
		return nil
	}
	var out []Change
	for _, e := range images.Content {
		fields := map[string]*yaml.Node{}
		for i := 0; i+1 < len(e.Content); i += 2 {
			fields[e.Content[i].Value] = e.Content[i+1]
		}
		for pname, s := range sel {
			match := (fields["newName"] != nil && fields["newName"].Value == s.Image) ||
				(fields["newName"] == nil && fields["name"] != nil && fields["name"].Value == s.Image)
			if !match || fields["newTag"] == nil || fields["newTag"].Value == s.Tag {
				continue
			}
			out = append(out, Change{File: file, Line: fields["newTag"].Line, Policy: pname, Image: s.Image, From: fields["newTag"].Value, To: s.Tag})
		}
	}
	return out
}
