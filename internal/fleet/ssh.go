// Package fleet reaches a pool's machines over SSH (golang.org/x/crypto/ssh)
// to bootstrap their node agents and to gather their status and plans.
// Every connection verifies the host key pinned in the MachinePool: a
// machine presenting another key is refused, by name.
package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"tend.dev/tend/internal/model"
)

// HostKeyError is a machine that presented a key other than the pinned one.
type HostKeyError struct {
	Machine, Address string
	Want, Got        string // SHA256 fingerprints
}

func (e *HostKeyError) Error() string {
	return fmt.Sprintf("machine %s (%s): host key mismatch: it presented %s, the pool pins %s", e.Machine, e.Address, e.Got, e.Want)
}

// Hint says what to do.
func (e *HostKeyError) ErrorHint() string {
	return "if the machine was reinstalled, check its new key out of band and update hostKey in the MachinePool; otherwise something is impersonating it"
}

// Fingerprint is the SHA256 fingerprint of a key, as ssh-keygen -l prints it.
func Fingerprint(k ssh.PublicKey) string {
	sum := sha256.Sum256(k.Marshal())
	return "SHA256:" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
}

// Dialer opens SSH connections to a pool's machines.
type Dialer struct {
	Signers []ssh.Signer
	// Timeout bounds connecting (default 10s).
	Timeout time.Duration
}

// LoadSigner reads a private key file.
func LoadSigner(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("read SSH key: %w", err), "pass the private key that machines accept with --ssh-key (default ~/.ssh/id_ed25519)")
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("SSH key %s: %w", path, err), "use an unencrypted key, or load it into ssh-agent")
	}
	return s, nil
}

// HostKeyCallback accepts only the key pinned for m.
func HostKeyCallback(m *model.Machine) (ssh.HostKeyCallback, error) {
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.HostKey))
	if err != nil {
		return nil, fmt.Errorf("machine %s: hostKey: %w", m.Name, err)
	}
	return func(_ string, _ net.Addr, got ssh.PublicKey) error {
		if got.Type() == want.Type() && bytes.Equal(got.Marshal(), want.Marshal()) {
			return nil
		}
		return &HostKeyError{Machine: m.Name, Address: m.SSHAddress(), Want: Fingerprint(want), Got: Fingerprint(got)}
	}, nil
}

// Dial connects to m as its pool user.
func (d *Dialer) Dial(ctx context.Context, m *model.Machine) (*ssh.Client, error) {
	return d.DialAs(ctx, m, m.SSHUser())
}

// DialAs connects to m as user.
func (d *Dialer) DialAs(ctx context.Context, m *model.Machine, user string) (*ssh.Client, error) {
	cb, err := HostKeyCallback(m)
	if err != nil {
		return nil, err
	}
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	cfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(d.Signers...)}, HostKeyCallback: cb, Timeout: timeout,
		HostKeyAlgorithms: []string{hostKeyAlgo(m.HostKey)}}
	dialer := net.Dialer{Timeout: timeout}
	conn, err := dialer.DialContext(ctx, "tcp", m.SSHAddress())
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("machine %s: connect %s: %w", m.Name, m.SSHAddress(), err), "check the address in the MachinePool and that the machine is up and reachable")
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(timeout))
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, m.SSHAddress(), cfg)
	if err != nil {
		conn.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, model.WithHint(fmt.Errorf("machine %s: %s refused the key: %w", m.Name, user, err), "add your public key to the user's authorized_keys, or pass --ssh-key")
		}
		return nil, fmt.Errorf("machine %s: ssh: %w", m.Name, err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

func hostKeyAlgo(authorized string) string {
	f := strings.Fields(authorized)
	if len(f) == 0 {
		return ssh.KeyAlgoED25519
	}
	if f[0] == ssh.KeyAlgoRSA {
		return ssh.KeyAlgoRSASHA256
	}
	return f[0]
}

// Run runs command on c with stdin, returning stdout; a failure carries stderr.
func Run(ctx context.Context, c *ssh.Client, command string, stdin io.Reader) ([]byte, error) {
	s, err := c.NewSession()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errb, stdin
	done := make(chan error, 1)
	go func() { done <- s.Run(command) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Signal(ssh.SIGKILL)
		return out.Bytes(), ctx.Err()
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		return out.Bytes(), &RemoteError{Command: command, Err: err, Stderr: msg}
	}
	return out.Bytes(), nil
}

// RemoteError is a command that failed on a machine.
type RemoteError struct {
	Command string
	Err     error
	Stderr  string
}

func (e *RemoteError) Error() string {
	cmd := e.Command
	if len(cmd) > 60 {
		cmd = cmd[:60] + "…"
	}
	if e.Stderr == "" {
		return fmt.Sprintf("%s: %v", cmd, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", cmd, e.Err, e.Stderr)
}

func (e *RemoteError) Unwrap() error { return e.Err }
