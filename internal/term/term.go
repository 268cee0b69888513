// Package term is how tend's commands meet the terminal: exit codes, errors
// printed with their hints (or as JSON), and short one-line cells. It is
// shared by the full tend and by the machine agent's build (cmd/tend-node),
// so it depends on nothing heavier than cobra.
package term

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"tend.dev/tend/internal/model"
)

// Exit codes, documented in docs/commands.md.
const (
	ExitOK       = 0
	ExitNotClean = 1
	ExitError    = 2
)

// NotClean is returned by commands whose result is valid but not clean
// (diff with changes, status with components not Ready): exit 1.
type NotClean struct{ Msg string }

func (n NotClean) Error() string { return n.Msg }

// Silent exits 2 without printing again what the command printed.
type Silent struct{ Err error }

func (s Silent) Error() string {
	if s.Err == nil {
		return "failed"
	}
	return s.Err.Error()
}

func (s Silent) Unwrap() error { return s.Err }

// Code prints err the one way tend prints errors and maps it to an exit
// code. With -o json the error goes to stdout as JSON, for scripts.
func Code(root *cobra.Command, err error, stdout, stderr io.Writer) int {
	if err == nil {
		return ExitOK
	}
	var nc NotClean
	if errors.As(err, &nc) {
		return ExitNotClean
	}
	var se Silent
	if errors.As(err, &se) {
		return ExitError
	}
	if f := root.PersistentFlags().Lookup("output"); f != nil && f.Value.String() == "json" {
		PrintErrorJSON(stdout, err)
	} else {
		PrintError(stderr, err)
	}
	return ExitError
}

// PrintError prints each error with its hint on the next line.
func PrintError(w io.Writer, err error) {
	var es model.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			level := "error"
			if e.Warning {
				level = "warning"
			}
			fmt.Fprintf(w, "%s: %s\n", level, e.Error())
			if e.Hint != "" {
				fmt.Fprintf(w, "  hint: %s\n", e.Hint)
			}
		}
		return
	}
	// errors.Join of several object errors: print each with its hint.
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			PrintError(w, e)
		}
		return
	}
	fmt.Fprintf(w, "error: %s\n", strings.TrimSpace(err.Error()))
	if h := model.HintOf(err); h != "" {
		fmt.Fprintf(w, "  hint: %s\n", h)
	}
}

type jsonError struct {
	Error    string       `json:"error"`
	Hint     string       `json:"hint,omitempty"`
	Problems model.Errors `json:"problems,omitempty"`
}

// PrintErrorJSON prints err as {"error", "hint", "problems"}.
func PrintErrorJSON(w io.Writer, err error) {
	je := jsonError{Error: err.Error(), Hint: model.HintOf(err)}
	var es model.Errors
	if errors.As(err, &es) {
		je.Problems = es
	}
	PrintJSON(w, je)
}

// PrintJSON prints v indented, as every -o json does.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// OneLine folds s onto one line of at most n characters.
func OneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
