package cli

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

// notClean is returned by commands whose result is valid but not clean
// (diff with changes, status with components not Ready).
type notClean struct{ msg string }

func (n notClean) Error() string { return n.msg }

// exitCode prints err the one way tend prints errors and maps it to a code.
func exitCode(root *cobra.Command, err error, stdout, stderr io.Writer) int {
	if err == nil {
		return ExitOK
	}
	var nc notClean
	if errors.As(err, &nc) {
		return ExitNotClean
	}
	var se silentErr
	if errors.As(err, &se) {
		return ExitError
	}
	jsonOut := false
	if f := root.PersistentFlags().Lookup("output"); f != nil && f.Value.String() == "json" {
		jsonOut = true
	}
	if jsonOut {
		printErrorJSON(stdout, err)
	} else {
		printError(stderr, err)
	}
	return ExitError
}

func printError(w io.Writer, err error) {
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
			printError(w, e)
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

func printErrorJSON(w io.Writer, err error) {
	je := jsonError{Error: err.Error(), Hint: model.HintOf(err)}
	var es model.Errors
	if errors.As(err, &es) {
		je.Problems = es
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(je)
}
