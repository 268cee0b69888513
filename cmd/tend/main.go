// Command tend installs and maintains a platform from one git repository.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"tend.dev/tend/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
