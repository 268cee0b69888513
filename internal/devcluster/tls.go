package devcluster

import "crypto/tls"

// insecureTLS is used only for the health endpoints of the controller-manager
// and scheduler on loopback, whose self-signed serving certificates no client
// can verify.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // loopback health probe only
