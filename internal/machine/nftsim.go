package machine

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// SSHProbe is the packet whose fate CheckSSHRuleset decides: a new TCP
// connection to the SSH port of the machine, from one address that must
// keep access, arriving on an interface other than loopback.
type SSHProbe struct {
	From, To netip.Addr
	Port     int
	// Iface is the interface the packet arrives on, the one holding To;
	// "" when unknown (an address behind NAT).
	Iface string
}

// CheckSSHRuleset follows each probe through a ruleset as nft itself printed it
// (`nft -j -e -f`, loaded in a throwaway network namespace): every base
// chain on the prerouting and input hooks of the families that see the
// packet, rule by rule, through jumps, gotos, verdict maps and named sets,
// to a verdict. It returns an error naming the chain and rule when the
// packet would be dropped.
//
// What the packet is not known to match (a rate limit, a mark, an
// interface name when the probe's interface is unknown) does not count:
// such an accept is not relied on, and such a drop is not feared, so a
// ruleset is refused only when the drop is certain.
// Pure.
func CheckSSHRuleset(nftJSON []byte, probes ...SSHProbe) error {
	rs, err := parseNFT(nftJSON)
	if err != nil {
		return err
	}
	for _, probe := range probes {
		if err := rs.check(probe); err != nil {
			return err
		}
	}
	return nil
}

func (rs *nftRuleset) check(probe SSHProbe) error {
	for _, c := range rs.chains {
		if c.hook != "input" && c.hook != "prerouting" || c.typ == "nat" || !familySees(c.family, probe.From) {
			continue
		}
		v, why := rs.run(c, probe, 0)
		if v == "" {
			v, why = c.policy, fmt.Sprintf("chain %s %s %s: the policy %s", c.family, c.table, c.name, c.policy)
		}
		if v == "drop" || v == "reject" {
			return fmt.Errorf("the ruleset would cut off SSH from %s to tcp port %d: %s", probe.From, probe.Port, why)
		}
	}
	return nil
}

func familySees(family string, from netip.Addr) bool {
	switch family {
	case "inet":
		return true
	case "ip":
		return from.Is4()
	case "ip6":
		return from.Is6()
	}
	return false
}

type nftChain struct {
	family, table, name, hook, typ, policy string
	rules                                  []nftRule
}

type nftRule struct {
	handle int
	expr   []map[string]json.RawMessage
}

type nftRuleset struct {
	chains []*nftChain
	byName map[string]*nftChain // family/table/name
	sets   map[string][]json.RawMessage
}

func parseNFT(b []byte) (*nftRuleset, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("read nft's JSON: %w", err)
	}
	rs := &nftRuleset{byName: map[string]*nftChain{}, sets: map[string][]json.RawMessage{}}
	for _, obj := range doc.Nftables {
		// nft -e wraps each object in {"add": …}; nft list does not.
		if add, ok := obj["add"]; ok {
			obj = nil
			if err := json.Unmarshal(add, &obj); err != nil {
				return nil, err
			}
		}
		switch {
		case obj["chain"] != nil:
			var c struct {
				Family, Table, Name, Hook, Type, Policy string
			}
			json.Unmarshal(obj["chain"], &c)
			ch := &nftChain{family: c.Family, table: c.Table, name: c.Name, hook: c.Hook, typ: c.Type, policy: c.Policy}
			if ch.policy == "" {
				ch.policy = "accept"
			}
			rs.chains = append(rs.chains, ch)
			rs.byName[c.Family+"/"+c.Table+"/"+c.Name] = ch
		case obj["rule"] != nil:
			var r struct {
				Family, Table, Chain string
				Handle               int
				Expr                 []map[string]json.RawMessage
			}
			json.Unmarshal(obj["rule"], &r)
			if ch := rs.byName[r.Family+"/"+r.Table+"/"+r.Chain]; ch != nil {
				ch.rules = append(ch.rules, nftRule{handle: r.Handle, expr: r.Expr})
			}
		case obj["element"] != nil:
			// Elements added after their set (nft -e prints interval
			// sets this way).
			var e struct {
				Family, Table, Name string
				Elem                json.RawMessage
			}
			json.Unmarshal(obj["element"], &e)
			key := e.Family + "/" + e.Table + "/" + e.Name
			var set struct{ Set []json.RawMessage }
			var list []json.RawMessage
			if json.Unmarshal(e.Elem, &set) == nil && set.Set != nil {
				rs.sets[key] = append(rs.sets[key], set.Set...)
			} else if json.Unmarshal(e.Elem, &list) == nil {
				rs.sets[key] = append(rs.sets[key], list...)
			}
		case obj["set"] != nil || obj["map"] != nil:
			raw := obj["set"]
			if raw == nil {
				raw = obj["map"]
			}
			var s struct {
				Family, Table, Name string
				Elem                []json.RawMessage
			}
			json.Unmarshal(raw, &s)
			key := s.Family + "/" + s.Table + "/" + s.Name
			rs.sets[key] = append(rs.sets[key], s.Elem...)
		}
	}
	return rs, nil
}

// tri is a match that is true, false, or not known for the probe.
type tri int

const (
	no tri = iota
	yes
	maybe
)

// run follows the probe through chain c. It returns the verdict ("accept",
// "drop", "reject") and why, or "" when the packet falls off the end or
// returns.
func (rs *nftRuleset) run(c *nftChain, p SSHProbe, depth int) (string, string) {
	if depth > 16 {
		return "", ""
	}
	for _, r := range c.rules {
		where := fmt.Sprintf("chain %s %s %s, rule %d", c.family, c.table, c.name, r.handle)
		cond := yes
		for _, e := range r.expr {
			if cond == no {
				break
			}
			for k, raw := range e {
				switch k {
				case "match":
					cond = and(cond, rs.match(c, raw, p))
				case "limit", "quota", "ct count", "numgen", "fib":
					cond = and(cond, maybe)
				case "accept", "drop", "reject":
					if cond == yes {
						return k, where + ": " + k
					}
				case "jump", "goto":
					if cond != yes {
						continue
					}
					var t struct{ Target string }
					json.Unmarshal(raw, &t)
					target := rs.byName[c.family+"/"+c.table+"/"+t.Target]
					if target == nil {
						continue
					}
					if v, why := rs.run(target, p, depth+1); v != "" {
						return v, why
					}
					if k == "goto" {
						return "", ""
					}
				case "return":
					if cond == yes {
						return "", ""
					}
				case "vmap":
					if cond != yes {
						continue
					}
					if v, ok := rs.vmap(c, raw, p); ok {
						if v.verdict == "jump" || v.verdict == "goto" {
							if target := rs.byName[c.family+"/"+c.table+"/"+v.target]; target != nil {
								if tv, why := rs.run(target, p, depth+1); tv != "" {
									return tv, why
								}
								if v.verdict == "goto" {
									return "", ""
								}
							}
							continue
						}
						if v.verdict == "accept" || v.verdict == "drop" || v.verdict == "reject" {
							return v.verdict, where + ": verdict map gives " + v.verdict
						}
					}
				}
			}
		}
	}
	return "", ""
}

func and(a, b tri) tri {
	switch {
	case a == no || b == no:
		return no
	case a == maybe || b == maybe:
		return maybe
	}
	return yes
}

func not(t tri) tri {
	switch t {
	case yes:
		return no
	case no:
		return yes
	}
	return maybe
}

// field is what the probe has for a match's left side: a number, a string
// or an address; ok is false for what the probe does not know.
type field struct {
	kind string // "num", "str", "addr", "strs"
	num  int
	str  string
	strs []string
	addr netip.Addr
	ok   bool
}

func (rs *nftRuleset) left(raw json.RawMessage, p SSHProbe) field {
	var l struct {
		Payload *struct{ Protocol, Field string }
		Meta    *struct{ Key string }
		Ct      *struct{ Key string }
	}
	if json.Unmarshal(raw, &l) != nil {
		return field{}
	}
	switch {
	case l.Payload != nil:
		switch {
		case (l.Payload.Protocol == "tcp" || l.Payload.Protocol == "th") && l.Payload.Field == "dport":
			return field{kind: "num", num: p.Port, ok: true}
		case (l.Payload.Protocol == "ip" || l.Payload.Protocol == "ip6") && l.Payload.Field == "saddr":
			return field{kind: "addr", addr: p.From, ok: true}
		case (l.Payload.Protocol == "ip" || l.Payload.Protocol == "ip6") && l.Payload.Field == "daddr":
			return field{kind: "addr", addr: p.To, ok: p.To.IsValid()}
		case l.Payload.Protocol == "ip" && l.Payload.Field == "protocol", l.Payload.Protocol == "ip6" && l.Payload.Field == "nexthdr":
			return field{kind: "str", str: "tcp", ok: true}
		case l.Payload.Protocol != "tcp" && l.Payload.Protocol != "th" && l.Payload.Protocol != "ip" && l.Payload.Protocol != "ip6":
			// A field of another protocol (udp, icmp…): the probe has none.
			return field{kind: "absent", ok: true}
		}
	case l.Meta != nil:
		switch l.Meta.Key {
		case "l4proto":
			return field{kind: "str", str: "tcp", ok: true}
		case "nfproto":
			if p.From.Is4() {
				return field{kind: "str", str: "ipv4", ok: true}
			}
			return field{kind: "str", str: "ipv6", ok: true}
		case "iif", "iifname":
			return field{kind: "iface", str: p.Iface, ok: true}
		}
	case l.Ct != nil && l.Ct.Key == "state":
		return field{kind: "strs", strs: []string{"new"}, ok: true}
	}
	return field{}
}

// match decides one match expression for the probe.
func (rs *nftRuleset) match(c *nftChain, raw json.RawMessage, p SSHProbe) tri {
	var m struct {
		Op    string
		Left  json.RawMessage
		Right json.RawMessage
	}
	if json.Unmarshal(raw, &m) != nil {
		return maybe
	}
	f := rs.left(m.Left, p)
	if !f.ok {
		return maybe
	}
	if f.kind == "absent" {
		return no
	}
	var in tri
	switch f.kind {
	case "iface":
		in = no
		for _, v := range rs.values(c, m.Right) {
			if t := ifaceMatch(v, f.str); t != no {
				in = t
				if t == yes {
					break
				}
			}
		}
	case "strs":
		// ct state: a flag set; "in" and "==" both ask whether new is among them.
		in = no
		for _, v := range rs.values(c, m.Right) {
			var s string
			if json.Unmarshal(v, &s) == nil && s == "new" {
				in = yes
			}
		}
	default:
		in = no
		for _, v := range rs.values(c, m.Right) {
			if t := contains(v, f); t != no {
				in = t
				if t == yes {
					break
				}
			}
		}
	}
	switch m.Op {
	case "==", "in":
		return in
	case "!=":
		return not(in)
	}
	return maybe
}

// values flattens a match's right side: a value, an anonymous set, a list,
// or a named set.
func (rs *nftRuleset) values(c *nftChain, raw json.RawMessage) []json.RawMessage {
	var s string
	if json.Unmarshal(raw, &s) == nil && strings.HasPrefix(s, "@") {
		return rs.sets[c.family+"/"+c.table+"/"+s[1:]]
	}
	var set struct{ Set []json.RawMessage }
	if json.Unmarshal(raw, &set) == nil && set.Set != nil {
		return set.Set
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	return []json.RawMessage{raw}
}

// contains decides whether one element (a value, a prefix, a range) holds
// the probe's field.
func contains(v json.RawMessage, f field) tri {
	var el struct {
		Prefix *struct {
			Addr string
			Len  int
		}
		Range []json.RawMessage
		Elem  *struct{ Val json.RawMessage }
	}
	if json.Unmarshal(v, &el) == nil {
		switch {
		case el.Elem != nil:
			return contains(el.Elem.Val, f)
		case el.Prefix != nil && f.kind == "addr":
			a, err := netip.ParseAddr(el.Prefix.Addr)
			if err != nil {
				return maybe
			}
			pf, err := a.Prefix(el.Prefix.Len)
			if err != nil {
				return maybe
			}
			return boolTri(pf.Contains(f.addr))
		case len(el.Range) == 2:
			switch f.kind {
			case "num":
				var lo, hi int
				if json.Unmarshal(el.Range[0], &lo) != nil || json.Unmarshal(el.Range[1], &hi) != nil {
					return maybe
				}
				return boolTri(lo <= f.num && f.num <= hi)
			case "addr":
				var los, his string
				json.Unmarshal(el.Range[0], &los)
				json.Unmarshal(el.Range[1], &his)
				lo, err1 := netip.ParseAddr(los)
				hi, err2 := netip.ParseAddr(his)
				if err1 != nil || err2 != nil {
					return maybe
				}
				return boolTri(lo.Compare(f.addr) <= 0 && f.addr.Compare(hi) <= 0)
			}
			return maybe
		}
	}
	switch f.kind {
	case "num":
		var n int
		if json.Unmarshal(v, &n) == nil {
			return boolTri(n == f.num)
		}
	case "str":
		var s string
		if json.Unmarshal(v, &s) == nil {
			return boolTri(s == f.str || s == "6" && f.str == "tcp")
		}
		var n int
		if json.Unmarshal(v, &n) == nil {
			return boolTri(n == 6 && f.str == "tcp")
		}
	case "addr":
		var s string
		if json.Unmarshal(v, &s) == nil {
			if a, err := netip.ParseAddr(s); err == nil {
				return boolTri(a == f.addr)
			}
		}
	}
	return maybe
}

// ifaceMatch decides whether an interface name (or "eth*" wildcard) is the
// probe's interface. Loopback never is; another name is unknown when the
// probe's interface is.
func ifaceMatch(v json.RawMessage, iface string) tri {
	var s string
	if json.Unmarshal(v, &s) != nil {
		return maybe
	}
	switch {
	case s == "lo":
		return no
	case iface == "":
		return maybe
	case strings.HasSuffix(s, "*"):
		return boolTri(strings.HasPrefix(iface, strings.TrimSuffix(s, "*")))
	}
	return boolTri(s == iface)
}

func boolTri(b bool) tri {
	if b {
		return yes
	}
	return no
}

type mapVerdict struct{ verdict, target string }

// vmap looks the probe up in a verdict map: `ct state vmap { … }`, `tcp
// dport vmap { … }`.
func (rs *nftRuleset) vmap(c *nftChain, raw json.RawMessage, p SSHProbe) (mapVerdict, bool) {
	var vm struct {
		Key  json.RawMessage
		Data json.RawMessage
	}
	if json.Unmarshal(raw, &vm) != nil {
		return mapVerdict{}, false
	}
	f := rs.left(vm.Key, p)
	if !f.ok || f.kind == "iface" && f.str == "" || f.kind == "absent" {
		return mapVerdict{}, false
	}
	for _, pair := range rs.values(c, vm.Data) {
		var kv []json.RawMessage
		if json.Unmarshal(pair, &kv) != nil || len(kv) != 2 {
			continue
		}
		var hit tri
		if f.kind == "strs" {
			var s string
			hit = boolTri(json.Unmarshal(kv[0], &s) == nil && s == "new")
		} else if f.kind == "iface" {
			hit = ifaceMatch(kv[0], f.str)
		} else {
			hit = contains(kv[0], f)
		}
		if hit != yes {
			continue
		}
		var verdict map[string]json.RawMessage
		if json.Unmarshal(kv[1], &verdict) != nil {
			return mapVerdict{}, false
		}
		for k, v := range verdict {
			var t struct{ Target string }
			json.Unmarshal(v, &t)
			return mapVerdict{verdict: k, target: t.Target}, true
		}
	}
	return mapVerdict{}, false
}
