package model

import (
	"errors"
	"fmt"
	"strings"
)

// Error is a problem in the ops repository that the user must fix. It names
// where (file:line), what (the object), and what to do next (the hint).
type Error struct {
	Origin Origin `json:"origin"`
	// Object names the object concerned, as Kind/name, when known.
	Object string `json:"object,omitempty"`
	Msg    string `json:"message"`
	Hint   string `json:"hint,omitempty"`
	// Warning marks problems that do not stop an apply.
	Warning bool `json:"warning,omitempty"`
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Origin.File != "" {
		b.WriteString(e.Origin.String())
		b.WriteString(": ")
	}
	if e.Object != "" {
		b.WriteString(e.Object)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorHint returns the hint; the CLI prints it on its own line.
func (e *Error) ErrorHint() string { return e.Hint }

// Errors is a list of problems found in one pass, so a user sees all of them at once.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, 0, len(es))
	for _, e := range es {
		msgs = append(msgs, e.Error())
	}
	return strings.Join(msgs, "\n")
}

// Err returns nil when there are no errors (warnings don't count).
func (es Errors) Err() error {
	var out Errors
	for _, e := range es {
		if !e.Warning {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Hinter is implemented by errors that carry advice for the user.
type Hinter interface{ ErrorHint() string }

// HintOf returns the first hint found in err's chain.
func HintOf(err error) string {
	for err != nil {
		if h, ok := err.(Hinter); ok && h.ErrorHint() != "" {
			return h.ErrorHint()
		}
		if es, ok := err.(Errors); ok && len(es) > 0 {
			return es[0].Hint
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				if h := HintOf(e); h != "" {
					return h
				}
			}
			return ""
		}
		err = errors.Unwrap(err)
	}
	return ""
}

// HintError wraps err with a hint.
type HintError struct {
	Err  error
	Hint string
}

func (e *HintError) Error() string     { return e.Err.Error() }
func (e *HintError) Unwrap() error     { return e.Err }
func (e *HintError) ErrorHint() string { return e.Hint }

// WithHint attaches a hint to err.
func WithHint(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return &HintError{Err: err, Hint: fmt.Sprintf(format, a...)}
}
