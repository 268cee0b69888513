package render

import (
	"bytes"
	"fmt"
	"regexp"

	"tend.dev/tend/internal/model"
)

// varRef matches $${escaped}, ${name} and ${name:=default}.
var varRef = regexp.MustCompile(`\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(:=([^}]*))?\}`)

// Substitute replaces ${name} with vars[name], or the default given as
// ${name:=default}. $${name} is written out as ${name}. A variable with no
// value and no default is an error, not an empty string: a silently empty
// field is worse than a failed render.
func Substitute(file string, data []byte, vars map[string]string) ([]byte, model.Errors) {
	if !bytes.Contains(data, []byte("${")) {
		return data, nil
	}
	var errs model.Errors
	lines := bytes.SplitAfter(data, []byte("\n"))
	for i, line := range lines {
		if !bytes.Contains(line, []byte("${")) {
			continue
		}
		lines[i] = varRef.ReplaceAllFunc(line, func(m []byte) []byte {
			if bytes.HasPrefix(m, []byte("$$")) {
				return m[1:]
			}
			sub := varRef.FindSubmatch(m)
			name := string(sub[1])
			if v, ok := vars[name]; ok {
				return []byte(v)
			}
			if sub[2] != nil {
				return sub[3]
			}
			errs = append(errs, &model.Error{Origin: model.Origin{File: file, Line: i + 1},
				Msg:  fmt.Sprintf("variable ${%s} has no value", name),
				Hint: fmt.Sprintf("set it in the component's or Cluster's substitutions, give a default with ${%s:=value}, or write $${%s} for a literal", name, name)})
			return m
		})
	}
	return bytes.Join(lines, nil), errs
}
