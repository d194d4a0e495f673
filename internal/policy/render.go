package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/fastpath-net/fastpath/internal/fpnetpol"
	"github.com/fastpath-net/fastpath/internal/identity"
)

// Render writes the Engine's whole desired state as text: identities,
// ipcache, every endpoint's entries, problems. Golden tests compare it.
func (e *Engine) Render() string {
	var b strings.Builder
	b.WriteString("identities\n")
	for _, id := range sortedIDs(e.idents) {
		fmt.Fprintf(&b, "  %s\n", e.describe(id))
	}
	cidrs := make([]netip.Prefix, 0, len(e.cidrs))
	for p := range e.cidrs {
		cidrs = append(cidrs, p)
	}
	sortPrefixes(cidrs)
	for _, p := range cidrs {
		fmt.Fprintf(&b, "  %d cidr %s\n", e.cidrs[p].id, p)
	}
	b.WriteString("ipcache\n")
	prefixes := make([]netip.Prefix, 0, len(e.ipcache))
	for p := range e.ipcache {
		prefixes = append(prefixes, p)
	}
	sortPrefixes(prefixes)
	for _, p := range prefixes {
		fmt.Fprintf(&b, "  %-18s %s\n", p, e.ipcache[p])
	}
	for _, n := range sortedPods(boolSet(e.endpoints)) {
		e.renderEndpoint(&b, e.endpoints[n])
	}
	if ps := e.Problems(); len(ps) > 0 {
		b.WriteString("problems\n")
		for _, p := range ps {
			fmt.Fprintf(&b, "  %s\n", p)
		}
	}
	return b.String()
}

// describe names an identity for people: its number, namespace and pod
// labels (namespace labels left out for width).
func (e *Engine) describe(id identity.ID) string {
	is, ok := e.idents[id]
	if !ok {
		for p, c := range e.cidrs {
			if c.id == id {
				return fmt.Sprintf("%d cidr %s", id, p)
			}
		}
		return id.String()
	}
	var kv []string
	for k, v := range is.podSet {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return fmt.Sprintf("%d %s:%s", id, is.labels.Namespace(), strings.Join(kv, ","))
}

func (e *Engine) renderEndpoint(b *strings.Builder, ep *EndpointPolicy) {
	fmt.Fprintf(b, "endpoint %s %s\n", ep.Pod, ep.Identity)
	keys := make([]Key, 0, len(ep.Entries))
	for k := range ep.Entries {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	for d := range Direction(2) {
		if !ep.Enforced[d] {
			fmt.Fprintf(b, "  %s open\n", d)
			continue
		}
		fmt.Fprintf(b, "  %s enforced by %s\n", d, strings.Join(ep.Selecting[d], " "))
		for _, k := range keys {
			if k.Dir != d {
				continue
			}
			peer := "any"
			if k.Identity != AnyIdentity {
				peer = e.describe(k.Identity)
			}
			refs := make([]string, len(ep.Entries[k]))
			for i, r := range ep.Entries[k] {
				refs[i] = r.String()
			}
			fmt.Fprintf(b, "    %-30s %-14s %s\n", peer, portString(k), strings.Join(refs, "; "))
			if l := ep.L7[k]; l != nil {
				renderL7(b, l)
			}
		}
	}
}

func portString(k Key) string {
	switch {
	case k.Proto == AnyProto:
		return "any"
	case k.Port == 0:
		return k.Proto.String() + "/*"
	case k.Port == k.EndPort:
		return fmt.Sprintf("%s/%d", k.Proto, k.Port)
	}
	return fmt.Sprintf("%s/%d-%d", k.Proto, k.Port, k.EndPort)
}

// renderL7 writes an entry's HTTP rules under it: "proxy", then the
// rules, denies first.
func renderL7(b *strings.Builder, l *L7) {
	b.WriteString("      proxy")
	if l.AllowAll {
		b.WriteString(", every request allowed but the denies")
	}
	b.WriteString("\n")
	for _, r := range l.Deny {
		fmt.Fprintf(b, "        deny  %-40s %s\n", httpString(r.Rule), r.Ref)
	}
	for _, r := range l.Allow {
		fmt.Fprintf(b, "        allow %-40s %s\n", httpString(r.Rule), r.Ref)
	}
}

func httpString(r fpnetpol.HTTPRule) string {
	var parts []string
	for _, f := range []struct{ k, v string }{{"method", r.Method}, {"host", r.Host}, {"path", r.Path}} {
		if f.v != "" {
			parts = append(parts, f.k+"="+f.v)
		}
	}
	for _, h := range r.Headers {
		switch {
		case h.Value != nil:
			parts = append(parts, fmt.Sprintf("header[%s]=%q", h.Name, *h.Value))
		case h.Regex != "":
			parts = append(parts, fmt.Sprintf("header[%s]~%s", h.Name, h.Regex))
		default:
			parts = append(parts, fmt.Sprintf("header[%s]", h.Name))
		}
	}
	if len(parts) == 0 {
		return "(every request)"
	}
	return strings.Join(parts, " ")
}
