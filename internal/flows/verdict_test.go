package flows

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

type fakeNames struct{}

func (fakeNames) Pod(ip netip.Addr) (string, string) {
	switch ip.String() {
	case "10.0.0.1":
		return "fp-a", "client"
	case "10.0.0.2":
		return "fp-b", "server"
	}
	return "", ""
}

func (fakeNames) Identity(id identity.ID) (string, []string, string) {
	if id == 4711 {
		return "fp-a", []string{"app=client"}, ""
	}
	return "", nil, ""
}

func (fakeNames) Service(rev uint32, _ uint8) string {
	if rev == 7 {
		return "fp-b/web (10.96.0.10:80)"
	}
	return ""
}

func (fakeNames) Explain(ns, pod string, d policy.Direction, peer identity.ID, proto policy.Proto, port uint16) string {
	return fmt.Sprintf("%s of %s/%s: denied: enforced by fp-b/deny-all, and no rule allows identity %d on %s/%d", d, ns, pod, peer, proto, port)
}

func verdict(src, dst string, dport uint16, reason uint8, cookie uint32) policymap.Verdict {
	return policymap.Verdict{Saddr: netip.MustParseAddr(src).As16(), Daddr: netip.MustParseAddr(dst).As16(),
		Sport: 40000, Dport: dport, Proto: 6, Reason: reason, Cookie: cookie, SrcIdentity: 4711, DstIdentity: 9}
}

// Every reason becomes a sentence naming the cause, with the names the
// agent knows.
func TestFromVerdictSentences(t *testing.T) {
	now := time.Unix(1, 0)
	denied := verdict("10.0.0.1", "10.0.0.2", 8080, policymap.ReasonPolicyDenied, 0)
	denied.Dir = policymap.DirIngress
	for _, tc := range []struct {
		v    policymap.Verdict
		want string
	}{
		{denied, "policy denied: ingress of fp-b/server: denied: enforced by fp-b/deny-all, and no rule allows identity 4711 on tcp/8080"},
		{verdict("10.0.0.1", "10.96.0.10", 80, policymap.ReasonLBNoBackend, 7),
			"no backend for service fp-b/web (10.96.0.10:80): rejected with ICMP port unreachable (from fp-a/client)"},
		{verdict("0.0.0.0", "10.96.0.10", 80, policymap.ReasonLBNoBackend, 7),
			"no backend for service fp-b/web (10.96.0.10:80): connect() refused (ECONNREFUSED) by the socket load balancer"},
		{verdict("192.0.2.9", "10.96.0.10", 80, policymap.ReasonLBSourceRange, 7),
			"source range denied: 192.0.2.9 is outside loadBalancerSourceRanges of service fp-b/web (10.96.0.10:80)"},
		{verdict("10.0.0.1", "10.0.0.2", 80, policymap.ReasonLBCTFull, 0), "CT map full: cannot track new flow, dropped (fp_ct insert failed): fp-a/client -> fp-b/server TCP/80"},
		{verdict("10.0.0.1", "10.0.0.2", 80, policymap.ReasonLBSNATNoPort, 0), "NAT port exhaustion: no free source port (--snat-ports) for fp-a/client -> fp-b/server TCP/80"},
		{verdict("10.0.0.9", "10.0.0.2", 80, policymap.ReasonLBMalformed, 0), "malformed packet: bad IPv4 or transport header, or a rewrite failed: 10.0.0.9 (identity 4711 in fp-a: app=client) -> fp-b/server TCP/80"},
	} {
		e := FromVerdict(tc.v, now, fakeNames{})
		if e.Summary != tc.want {
			t.Errorf("reason %s:\n got %s\nwant %s", policymap.ReasonName(tc.v.Reason), e.Summary, tc.want)
		}
		if e.Type != TypeDrop || e.Verdict != VerdictDropped || e.Reason != policymap.ReasonName(tc.v.Reason) || !e.Time.Equal(now) {
			t.Errorf("event %+v", e)
		}
	}
	if e := FromVerdict(verdict("10.0.0.1", "10.96.0.10", 80, policymap.ReasonLBNoBackend, 7), now, fakeNames{}); e.Destination.Namespace != "fp-b" {
		t.Errorf("a service's drop is in namespace %q, want the service's fp-b", e.Destination.Namespace)
	}
	allow := verdict("10.0.0.1", "10.0.0.2", 80, policymap.ReasonPolicyAllowed, 0)
	allow.Verdict = policymap.VerdictAllow
	e := FromVerdict(allow, now, fakeNames{})
	if e.Type != TypeAllow || e.Verdict != VerdictAllowed || e.Source.Workload() != "fp-a/client" || e.Destination.Workload() != "fp-b/server" {
		t.Errorf("allow event %+v", e)
	}
	// Every reason code the datapath has has a name of its own.
	fwd := verdict("10.0.0.1", "10.0.0.2", 80, policymap.ReasonForwarded, 0)
	fwd.Verdict = policymap.VerdictAllow
	if e := FromVerdict(fwd, now, fakeNames{}); e.Type != TypeAllow || e.IsPolicy() ||
		e.Summary != "forwarded: no ingress policy selects fp-b/server: fp-a/client -> fp-b/server TCP/80" {
		t.Errorf("forwarded event %+v", e)
	}
	for r := uint8(0); r <= policymap.ReasonForwarded; r++ {
		if name := policymap.ReasonName(r); strings.HasPrefix(name, "reason-") {
			t.Errorf("unnamed reason %s", name)
		}
	}
}

// TestFromVerdictL7: the L7 reasons (to the proxy, no proxy) read as
// sentences naming the side whose HTTP rules want the proxy.
func TestFromVerdictL7(t *testing.T) {
	now := time.Unix(1, 0)
	for _, tc := range []struct {
		reason  uint8
		dir     uint8
		verdict uint8
		want    string
	}{
		{policymap.ReasonProxyRedirect, policymap.DirIngress, policymap.VerdictAllow,
			"to L7 proxy: allowed at L4, the ingress of fp-b/server has HTTP rules for it; the node's proxy judges each request: fp-a/client -> fp-b/server TCP/80"},
		{policymap.ReasonProxyRedirect, policymap.DirEgress, policymap.VerdictAllow,
			"to L7 proxy: allowed at L4, the egress of fp-a/client has HTTP rules for it; the node's proxy judges each request: fp-a/client -> fp-b/server TCP/80"},
		{policymap.ReasonNoProxy, policymap.DirIngress, policymap.VerdictDrop,
			"L7 proxy unavailable: the ingress of fp-b/server has HTTP rules for this flow, but no proxy can take it here " +
				"(--enable-l7-proxy off on this node, or a path the datapath cannot redirect: the client's egress on a masqueraded Service flow, judged by tc_lb): dropped, fail closed: fp-a/client -> fp-b/server TCP/80"},
		{policymap.ReasonNoProxy, policymap.DirEgress, policymap.VerdictDrop,
			"L7 proxy unavailable: the egress of fp-a/client has HTTP rules for this flow, but no proxy can take it here " +
				"(--enable-l7-proxy off on this node, or a path the datapath cannot redirect: the client's egress on a masqueraded Service flow, judged by tc_lb): dropped, fail closed: fp-a/client -> fp-b/server TCP/80"},
	} {
		v := verdict("10.0.0.1", "10.0.0.2", 80, tc.reason, 7)
		v.Dir, v.Verdict = tc.dir, tc.verdict
		e := FromVerdict(v, now, fakeNames{})
		if e.Summary != tc.want {
			t.Errorf("reason %s dir %d:\n got %s\nwant %s", policymap.ReasonName(tc.reason), tc.dir, e.Summary, tc.want)
		}
		if e.Reason != policymap.ReasonName(tc.reason) || (e.Verdict == VerdictAllowed) != (tc.verdict == policymap.VerdictAllow) {
			t.Errorf("reason %s: event %+v", policymap.ReasonName(tc.reason), e)
		}
		if e.Destination.Service != "" {
			t.Errorf("reason %s: cookie %d read as a service %q; an L7 record's cookie is a policy's", policymap.ReasonName(tc.reason), v.Cookie, e.Destination.Service)
		}
	}
}

// TestFromVerdictSpoofed: a source-spoofed drop names the sending endpoint
// and its identity, not the owner of the forged address.
func TestFromVerdictSpoofed(t *testing.T) {
	v := verdict("10.0.0.1", "10.0.0.2", 80, policymap.ReasonSpoofed, 0)
	v.Dir, v.Endpoint, v.SrcIdentity = policymap.DirEgress, 12, 4711
	e := FromVerdict(v, time.Unix(1, 0), fakeNames{})
	want := "source address spoofed: the pod of endpoint 12 (identity 4711) sent from 10.0.0.1, not its own address: dropped: fp-a/client -> fp-b/server TCP/80"
	if e.Summary != want || e.Reason != "source-spoofed" || e.Verdict == VerdictAllowed {
		t.Errorf("event %+v\nwant summary %s", e, want)
	}
}
