package machine

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nftJSON has the real nft load a ruleset in a throwaway network namespace
// and print it back, as the agent does in plan.
func nftJSON(t *testing.T, ruleset string) []byte {
	t.Helper()
	for _, tool := range []string{"nft", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test runs the real nft in a network namespace: %s not found (apt-get install nftables util-linux; the README's test command does)", tool)
		}
	}
	f := filepath.Join(t.TempDir(), "rules.nft")
	os.WriteFile(f, []byte("flush ruleset\n"+ruleset), 0o600)
	out, err := exec.Command("unshare", "--net", "--", "nft", "-j", "-e", "-f", f).CombinedOutput()
	if err != nil {
		t.Fatalf("nft (needs root for a network namespace): %v\n%s", err, out)
	}
	return out
}

func TestCheckSSHRuleset(t *testing.T) {
	const (
		peer   = "10.213.57.12" // another machine of the pool
		anyone = "203.0.113.1"
	)
	input := func(body string) string {
		return "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n" + body + "\n  }\n}\n"
	}
	tests := []struct {
		name    string
		ruleset string
		from    string
		port    int
		iface   string
		want    string // part of the error; "" for kept access
	}{
		{name: "plain accept", ruleset: input("iif lo accept\nct state established,related accept\ntcp dport 22 accept"), from: anyone},
		{name: "no accept, policy drop", ruleset: input("iif lo accept\nct state established,related accept\ntcp dport 80 accept"), from: anyone, want: "the policy drop"},
		{name: "policy accept", ruleset: "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 80 drop\n  }\n}\n", from: anyone},
		{name: "ssh service name and a set", ruleset: input("tcp dport { ssh, 443 } accept"), from: anyone},
		{name: "port range", ruleset: input("tcp dport 20-30 accept"), from: anyone},
		{name: "other port kept open, ssh moved", ruleset: input("tcp dport 2222 accept"), from: anyone, port: 2222},
		{name: "udp 22 is not ssh", ruleset: input("udp dport 22 accept"), from: anyone, want: "policy drop"},
		{name: "accept only for loopback", ruleset: input("iif lo tcp dport 22 accept"), from: anyone, want: "policy drop"},
		{name: "established only", ruleset: input("ct state established tcp dport 22 accept"), from: anyone, want: "policy drop"},
		{name: "drop before the accept", ruleset: input("tcp dport 22 drop\ntcp dport 22 accept"), from: anyone, want: "rule"},
		{name: "reject before the accept", ruleset: input("meta l4proto tcp reject with tcp reset\ntcp dport 22 accept"), from: anyone, want: "reject"},
		{name: "blocklist of another address", ruleset: input("ip saddr 198.51.100.7 drop\ntcp dport 22 accept"), from: anyone},
		{name: "blocklisted source", ruleset: input("ip saddr 203.0.113.0/24 drop\ntcp dport 22 accept"), from: anyone, want: "rule"},
		{name: "admin network includes the peer", ruleset: input("ip saddr 10.213.57.0/24 tcp dport 22 accept"), from: peer},
		{name: "admin network, operator elsewhere", ruleset: input("ip saddr 10.213.57.0/24 tcp dport 22 accept"), from: anyone, want: "policy drop"},
		{name: "named set of admins", ruleset: "table inet filter {\n  set admins { type ipv4_addr; flags interval; elements = { 10.213.57.0/24, 192.0.2.9 } }\n  chain input {\n    type filter hook input priority 0; policy drop;\n    ip saddr @admins tcp dport 22 accept\n  }\n}\n", from: peer},
		{name: "named set without intervals", ruleset: "table inet filter {\n  set admins { type ipv4_addr; elements = { 10.213.57.12, 192.0.2.9 } }\n  chain input {\n    type filter hook input priority 0; policy drop;\n    ip saddr @admins tcp dport 22 accept\n  }\n}\n", from: peer},
		{name: "named verdict map", ruleset: "table inet filter {\n  map ports { type inet_service : verdict; elements = { 22 : accept, 80 : drop } }\n  chain input {\n    type filter hook input priority 0; policy drop;\n    tcp dport vmap @ports\n  }\n}\n", from: anyone},
		{name: "accept in a jumped chain", ruleset: "table inet filter {\n  chain ssh_in {\n    tcp dport 22 accept\n  }\n  chain input {\n    type filter hook input priority 0; policy drop;\n    jump ssh_in\n  }\n}\n", from: anyone},
		{name: "drop in a jumped chain", ruleset: "table inet filter {\n  chain bad {\n    tcp dport 22 drop\n  }\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 22 jump bad\n  }\n}\n", from: anyone, want: "chain inet filter bad"},
		{name: "return from a jump, then policy", ruleset: "table inet filter {\n  chain web {\n    tcp dport 80 accept\n    return\n  }\n  chain input {\n    type filter hook input priority 0; policy drop;\n    jump web\n  }\n}\n", from: anyone, want: "policy drop"},
		{name: "goto does not come back", ruleset: "table inet filter {\n  chain web {\n    tcp dport 80 accept\n  }\n  chain input {\n    type filter hook input priority 0; policy accept;\n    goto web\n    tcp dport 22 accept\n  }\n}\n", from: anyone},
		{name: "verdict map on ct state, then accept", ruleset: input("ct state vmap { established : accept, related : accept, invalid : drop }\ntcp dport 22 accept"), from: anyone},
		{name: "verdict map on port", ruleset: input("tcp dport vmap { 22 : accept, 23 : drop }"), from: anyone},
		{name: "verdict map drops ssh", ruleset: input("tcp dport vmap { 22 : drop }\ntcp dport 22 accept"), from: anyone, want: "verdict map gives drop"},
		{name: "rate limited accept is not relied on", ruleset: input("tcp dport 22 limit rate 5/minute accept"), from: anyone, want: "policy drop"},
		{name: "accept on an interface, unknown which", ruleset: input("iifname \"eth0\" tcp dport 22 accept"), from: anyone, want: "policy drop"},
		{name: "accept on the probe's interface", ruleset: input("iifname \"eth0\" tcp dport 22 accept"), from: anyone, iface: "eth0"},
		{name: "accept on an interface wildcard", ruleset: input("iifname \"eth*\" tcp dport 22 accept"), from: anyone, iface: "eth0"},
		{name: "accept on a set of interfaces", ruleset: input("iifname { \"mgmt0\", \"eth0\" } tcp dport 22 accept"), from: anyone, iface: "eth0"},
		{name: "accept on another interface", ruleset: input("iifname \"mgmt0\" tcp dport 22 accept"), from: anyone, iface: "eth0", want: "policy drop"},
		{name: "interface verdict map", ruleset: input("iifname vmap { \"eth0\" : accept }"), from: anyone, iface: "eth0"},
		{name: "drop on the probe's interface", ruleset: input("iifname \"eth0\" drop\ntcp dport 22 accept"), from: anyone, iface: "eth0", want: "rule"},
		{name: "second base chain drops", ruleset: input("tcp dport 22 accept") + "table ip extra {\n  chain pre {\n    type filter hook prerouting priority -150; policy accept;\n    tcp dport 22 drop\n  }\n}\n", from: anyone, want: "chain ip extra pre"},
		{name: "ip6 table does not see ipv4", ruleset: "table ip6 v6 {\n  chain input {\n    type filter hook input priority 0; policy drop;\n  }\n}\n", from: anyone},
		{name: "nat chain does not filter", ruleset: "table ip nat {\n  chain pre {\n    type nat hook prerouting priority -100; policy accept;\n    tcp dport 22 dnat to 10.0.0.1\n  }\n}\n", from: anyone},
		{name: "output chain does not matter", ruleset: "table inet filter {\n  chain output {\n    type filter hook output priority 0; policy drop;\n  }\n}\n", from: anyone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := tc.port
			if port == 0 {
				port = 22
			}
			err := CheckSSHRuleset(nftJSON(t, tc.ruleset), SSHProbe{From: netip.MustParseAddr(tc.from), To: netip.MustParseAddr("10.213.57.11"), Port: port, Iface: tc.iface})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused a ruleset that keeps SSH: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("accepted a ruleset that cuts off SSH")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}
