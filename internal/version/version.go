// Package version is tend's own version, one variable for both builds (the
// full tend and the machine build, tend-node), so that one flag sets it:
//
//	go build -ldflags "-X tend.dev/tend/internal/version.Version=1.4.0" ./cmd/tend ./cmd/tend-node
package version

// Version is set at build time; "dev" in a plain go build.
var Version = "dev"
