package l7policy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/fastpath-net/fastpath/internal/flows"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/l7proxy"
)

// FlowEvent turns one access-log record of the proxy into the monitor's
// event (Type l7), naming this node's pods at either end.
func (t *Table) FlowEvent(node string, ev l7proxy.Event) flows.Event {
	verdict, word := flows.VerdictDenied, "denied"
	if ev.Verdict.Allowed {
		verdict, word = flows.VerdictAllowed, "allowed"
	}
	rule := ev.Verdict.Rule
	if rule == "" {
		rule = ev.Verdict.Reason
	}
	t.mu.RLock()
	src, dst := t.end(ev.Flow.Src), t.end(ev.Flow.Dst)
	t.mu.RUnlock()
	by := ev.Endpoint
	if by == "" {
		by = "no policy"
	}
	return flows.Event{
		Time: ev.Time, Node: node, Type: flows.TypeL7, Verdict: verdict,
		Direction: ev.Direction.String(), Proto: "TCP", Source: src, Destination: dst,
		Reason:  "l7-" + word,
		Summary: fmt.Sprintf("l7 %s: %s %s%s by %s %s (%s) -> %d", word, ev.Method, ev.Host, ev.Path, by, ev.Direction, rule, ev.Status),
		L7:      &flows.L7{Protocol: strings.ToLower(ev.Proto), Method: ev.Method, Host: ev.Host, Path: ev.Path, Status: ev.Status, Rule: rule},
	}
}

func (t *Table) end(ap netip.AddrPort) flows.Endpoint {
	a := ap.Addr().Unmap()
	e := flows.Endpoint{IP: a.String(), Port: ap.Port()}
	id := t.identity(a)
	if id != identity.WorldIPv4 && id != identity.WorldIPv6 {
		e.Identity = uint32(id)
	} else {
		e.World = true
	}
	if ep := t.byAddr[a]; ep != nil {
		e.Namespace, e.Pod, _ = strings.Cut(ep.name, "/")
		e.World = false
	}
	return e
}
