package machine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// firewallRes is the machine's whole nftables ruleset. It is applied with
// `nft -f` in one transaction (the file starts with flush ruleset), so the
// machine never runs half a ruleset.
type firewallRes struct {
	ruleset string // as written in git
	sshPort int
	// self is the machine's address; sources must keep SSH access to it.
	self    netip.Addr
	sources []netip.Addr
	origin  string // file:line, for errors
	// stateDir keeps the hash of the live ruleset after the last apply, to
	// see drift without parsing nft's output.
	stateDir string
}

const nftConf = "/etc/nftables.conf"

func (f *firewallRes) key() string { return "firewall " + nftConf }

// fileContent is what tend writes to /etc/nftables.conf and loads. Pure.
func (f *firewallRes) fileContent() []byte {
	body := strings.TrimSpace(f.ruleset)
	if !strings.HasPrefix(body, "flush ruleset") {
		body = "flush ruleset\n\n" + body
	}
	return []byte("#!/usr/sbin/nft -f\n# Written by tend from the MachinePool; edits are put back.\n" + body + "\n")
}

func (f *firewallRes) hashFile(sys *System) string {
	return sys.Path(filepath.Join(f.stateDir, "nftables.live.sha256"))
}

func (f *firewallRes) plan(ctx context.Context, sys *System) (*Change, error) {
	want := f.fileContent()
	have, _ := os.ReadFile(sys.Path(nftConf))
	live, err := sys.run(ctx, "nft", "list", "ruleset")
	if err != nil {
		return nil, err
	}
	recorded, _ := os.ReadFile(f.hashFile(sys))
	sum := sha256.Sum256(live)
	liveHash := hex.EncodeToString(sum[:])
	var det []string
	if string(have) != string(want) {
		det = append(det, textDiff(have, want)...)
	}
	if strings.TrimSpace(string(recorded)) != liveHash {
		det = append(det, "live ruleset differs from the one tend loaded")
	}
	if len(det) == 0 {
		return nil, nil
	}
	// Check it now, so a broken ruleset, or one that would lock the agent
	// out, is refused in plan and the live one is never touched.
	if err := f.check(ctx, sys, want); err != nil {
		return nil, err
	}
	return &Change{Action: Update, Details: det, Disruptive: true}, nil
}

// check loads the ruleset into a throwaway network namespace, where nft
// both checks it and prints it back normalized as JSON, and follows a new
// SSH connection from each address that must keep access through it.
// Where namespaces cannot be made, it falls back to `nft -c` and a check
// of the text.
func (f *firewallRes) check(ctx context.Context, sys *System, want []byte) error {
	tmp, err := os.CreateTemp("", "tend-nft-*.conf")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tmp.Write(want)
	tmp.Close()
	rejects := func(out string) error {
		return withHint(fmt.Errorf("%s: nftables rejects the ruleset: %s", f.origin, lastLines(strings.ReplaceAll(out, tmp.Name(), "ruleset"), 4)),
			"fix the ruleset in git (nft -c -f FILE checks it locally); the live ruleset was not touched")
	}
	cutOff := func(err error) error {
		return withHint(fmt.Errorf("%s: %w", f.origin, err),
			fmt.Sprintf("accept tcp port %d from these addresses before any drop (e.g. `tcp dport %d accept` in the input chain), or list where operators connect from in firewall.sshFrom", f.sshPort, f.sshPort))
	}
	out, err := sys.run(ctx, "unshare", "--net", "--", "nft", "-j", "-e", "-f", tmp.Name())
	if err == nil {
		iface := ifaceOf(f.self)
		var probes []SSHProbe
		for _, from := range f.sources {
			probes = append(probes, SSHProbe{From: from, To: f.self, Port: f.sshPort, Iface: iface})
		}
		if err := CheckSSHRuleset(out, probes...); err != nil {
			return cutOff(err)
		}
		return nil
	}
	msg := string(out)
	if e, ok := err.(*ExecError); ok {
		msg = e.Out
	}
	if strings.Contains(msg, "Error:") {
		return rejects(msg)
	}
	// No network namespaces here (a restricted container): nft -c, and
	// the conservative text check.
	if out, err := sys.run(ctx, "nft", "-c", "-f", tmp.Name()); err != nil {
		msg := string(out)
		if e, ok := err.(*ExecError); ok {
			msg = e.Out
		}
		return rejects(msg)
	}
	if err := CheckSSHAccess(f.ruleset, f.sshPort); err != nil {
		return cutOff(err)
	}
	return nil
}

func (f *firewallRes) apply(ctx context.Context, sys *System, c *Change) error {
	want := f.fileContent()
	tmp := sys.Path(nftConf) + ".tend-new"
	if err := writeAtomic(tmp, want, 0o755, -1, -1); err != nil {
		return err
	}
	defer os.Remove(tmp)
	if _, err := sys.run(ctx, "nft", "-f", tmp); err != nil {
		return withHint(fmt.Errorf("load ruleset: %w", err), "the previous ruleset is still live (nft applies a file in one transaction)")
	}
	if err := os.Rename(tmp, sys.Path(nftConf)); err != nil {
		return err
	}
	live, err := sys.run(ctx, "nft", "list", "ruleset")
	if err != nil {
		return err
	}
	sum := sha256.Sum256(live)
	return writeAtomic(f.hashFile(sys), []byte(hex.EncodeToString(sum[:])+"\n"), 0o600, -1, -1)
}

var (
	chainStart = regexp.MustCompile(`^\s*chain\s+(\S+)\s*\{`)
	hookInput  = regexp.MustCompile(`type\s+filter\s+hook\s+input\b`)
	policyDrop = regexp.MustCompile(`policy\s+(drop|reject)`)
	dportRule  = regexp.MustCompile(`tcp\s+dport\s+(\{[^}]*\}|\S+)`)
	dropRule   = regexp.MustCompile(`^\s*(drop|reject)\b`)
)

// CheckSSHAccess refuses a ruleset whose input hook would drop new
// connections to the SSH port: a default drop (policy or a bare final
// drop) with no accept for the port before it. It reads the rules as text,
// so it is conservative: a ruleset it cannot prove safe is refused. Pure.
func CheckSSHAccess(ruleset string, port int) error {
	if port == 0 {
		port = 22
	}
	var chain string
	inInput, policy, bareDrop, accepts := false, false, false, false
	depth := 0
	check := func() error {
		if inInput && (bareDrop || policy && !accepts) {
			return fmt.Errorf("the ruleset would cut off SSH: input chain %s drops new connections to tcp port %d", chain, port)
		}
		return nil
	}
	for _, raw := range strings.Split(ruleset, "\n") {
		line := raw
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		if m := chainStart.FindStringSubmatch(line); m != nil {
			chain, inInput, policy, bareDrop, accepts, depth = m[1], false, false, false, false, 1
			continue
		}
		if chain == "" {
			continue
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
		if hookInput.MatchString(line) {
			inInput = true
			policy = policyDrop.MatchString(line)
		}
		if inInput {
			switch {
			case strings.Contains(line, "accept"):
				if m := dportRule.FindStringSubmatch(line); m != nil && portMatches(m[1], port) && !bareDrop {
					accepts = true
				}
			case dropRule.MatchString(line) && !accepts:
				// An unconditional drop: nothing after it is reached.
				bareDrop = true
			}
		}
		if depth <= 0 {
			if err := check(); err != nil {
				return err
			}
			chain = ""
		}
	}
	return check()
}

func portMatches(spec string, port int) bool {
	spec = strings.Trim(spec, "{} ")
	for _, p := range strings.Split(spec, ",") {
		p = strings.TrimSpace(p)
		if p == "ssh" && port == 22 {
			return true
		}
		if lo, hi, ok := strings.Cut(p, "-"); ok {
			l, err1 := strconv.Atoi(strings.TrimSpace(lo))
			h, err2 := strconv.Atoi(strings.TrimSpace(hi))
			if err1 == nil && err2 == nil && l <= port && port <= h {
				return true
			}
			continue
		}
		if n, err := strconv.Atoi(p); err == nil && n == port {
			return true
		}
	}
	return false
}

// ifaceOf names the local interface holding addr, where SSH arrives; ""
// when no interface has it (the address is a NAT's).
func ifaceOf(addr netip.Addr) string {
	ifs, err := net.Interfaces()
	if err != nil || !addr.IsValid() {
		return ""
	}
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == addr.Unmap() {
				return i.Name
			}
		}
	}
	return ""
}
