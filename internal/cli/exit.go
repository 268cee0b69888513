package cli

import "tend.dev/tend/internal/term"

// Exit codes, documented in docs/commands.md.
const (
	ExitOK       = term.ExitOK
	ExitNotClean = term.ExitNotClean
	ExitError    = term.ExitError
)

// notClean is returned by commands whose result is valid but not clean
// (diff with changes, status with components not Ready).
type notClean = term.NotClean

// silentErr exits 2 without printing again what the command printed.
type silentErr = term.Silent

var (
	exitCode   = term.Code
	printError = term.PrintError
	oneLine    = term.OneLine
)
