package policy

import (
	"reflect"
	"slices"
	"strings"

	"github.com/fastpath-net/fastpath/internal/fpnetpol"
)

// HTTPRule is one HTTP rule of a FastpathNetworkPolicy and where it is
// (Ref.Path: spec.ingress[0].toPorts[0].rules.http[1]).
type HTTPRule struct {
	Ref  RuleRef
	Rule fpnetpol.HTTPRule
}

// L7 is what the proxy applies to the requests of one redirected entry: a
// request is refused when a Deny rule matches it; otherwise allowed when
// AllowAll or an Allow rule matches it.
type L7 struct {
	// AllowAll: some allow of this entry has no HTTP rules (a
	// NetworkPolicy, an L4-only rule, or only httpDeny), so only Deny
	// refuses requests.
	AllowAll bool
	Allow    []HTTPRule
	Deny     []HTTPRule
}

// addL7 notes, while an endpoint is computed, that rule part l7 (nil: an
// L4-only allow) allows entry k.
func (ep *EndpointPolicy) addL7(k Key, l7 *l7Spec) {
	if l7 == nil {
		if ep.plain == nil {
			ep.plain = map[Key]bool{}
		}
		ep.plain[k] = true
		return
	}
	if ep.L7 == nil {
		ep.L7 = map[Key]*L7{}
	}
	ep.l7At(k).add(l7.allowAll, l7.allow, l7.deny)
}

func (ep *EndpointPolicy) l7At(k Key) *L7 {
	l := ep.L7[k]
	if l == nil {
		l = &L7{}
		ep.L7[k] = l
	}
	return l
}

func (l *L7) add(allowAll bool, allow, deny []HTTPRule) {
	l.AllowAll = l.AllowAll || allowAll
	l.Allow = append(l.Allow, allow...)
	l.Deny = append(l.Deny, deny...)
}

// finishL7 makes the L7 entries say what the union of allows, with denies
// first, means for the datapath's lookup (exact identity first, then any
// identity; the longest port prefix within each):
//   - an identity's own entry covering the port of an any-identity L7
//     entry would hide it, so that identity gets an L7 entry of its own on
//     the port, merging both;
//   - an L4-only allow covering an L7 entry's port (same identity or any)
//     allows every request there (AllowAll), its denies still apply;
//   - an entry that allows every request and denies none is not
//     redirected at all.
func (ep *EndpointPolicy) finishL7() {
	plain := ep.plain
	ep.plain = nil
	if len(ep.L7) == 0 {
		ep.L7 = nil
		return
	}
	for _, k := range sortedL7Keys(ep.L7) {
		if k.Identity != AnyIdentity {
			continue
		}
		for k2 := range ep.Entries {
			if k2.Identity == AnyIdentity || !k2.Matches(k.Dir, k2.Identity, k.Proto, k.Port) {
				continue
			}
			x := Key{Identity: k2.Identity, Dir: k.Dir, Proto: k.Proto, Port: k.Port, EndPort: k.Port}
			ep.mergeL7(x, k)
		}
	}
	for k, l := range ep.L7 {
		for k2 := range ep.Entries {
			if (plain[k2] || ep.L7[k2] == nil) && k2.Matches(k.Dir, k.Identity, k.Proto, k.Port) {
				l.AllowAll = true
			}
		}
	}
	for k, l := range ep.L7 {
		if l.AllowAll && len(l.Deny) == 0 {
			delete(ep.L7, k)
			continue
		}
		if l.AllowAll {
			l.Allow = nil
		}
		l.Allow = sortRules(l.Allow)
		l.Deny = sortRules(l.Deny)
	}
	if len(ep.L7) == 0 {
		ep.L7 = nil
	}
}

// mergeL7 adds the any-identity L7 entry from (and its rule refs) to the
// identity entry to.
func (ep *EndpointPolicy) mergeL7(to, from Key) {
	f := ep.L7[from]
	ep.l7At(to).add(f.AllowAll, f.Allow, f.Deny)
	for _, r := range ep.Entries[from] {
		if !slices.Contains(ep.Entries[to], r) {
			ep.Entries[to] = append(ep.Entries[to], r)
		}
	}
}

func sortRules(rs []HTTPRule) []HTTPRule {
	slices.SortFunc(rs, func(a, b HTTPRule) int { return strings.Compare(a.Ref.String(), b.Ref.String()) })
	return slices.CompactFunc(rs, func(a, b HTTPRule) bool { return a.Ref == b.Ref })
}

func sortedL7Keys(m map[Key]*L7) []Key {
	out := make([]Key, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, compareKeys)
	return out
}

func compareKeys(a, b Key) int {
	switch {
	case a.Dir != b.Dir:
		return int(a.Dir) - int(b.Dir)
	case a.Identity != b.Identity:
		return int(a.Identity) - int(b.Identity)
	case a.Proto != b.Proto:
		return int(a.Proto) - int(b.Proto)
	case a.Port != b.Port:
		return int(a.Port) - int(b.Port)
	}
	return int(a.EndPort) - int(b.EndPort)
}

func equalL7(a, b map[Key]*L7) bool { return reflect.DeepEqual(a, b) }
