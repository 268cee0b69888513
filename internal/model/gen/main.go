// Command gen writes the JSON Schema of the tend kinds; run by go generate
// in internal/model.
package main

import (
	"fmt"
	"os"

	"tend.dev/tend/internal/model"
)

func main() {
	b, err := model.Schema(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Args[1], append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
