package policymap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// ReasonName is the text of a verdict reason.
func ReasonName(r uint8) string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason-%d", r)
}

// reasonNames are the stable codes of the reasons, used in filters and
// JSON (internal/flows).
var reasonNames = [...]string{
	ReasonPolicyAllowed: "policy-allowed",
	ReasonPolicyDenied:  "policy-denied",
	ReasonCTFull:        "policy-ct-full",
	ReasonRelated:       "policy-related",
	ReasonLBNoBackend:   "no-backend",
	ReasonLBSourceRange: "source-range-denied",
	ReasonLBCTFull:      "ct-full",
	ReasonLBMalformed:   "malformed",
	ReasonLBBackendGone: "backend-gone",
	ReasonLBSNATNoPort:  "snat-no-port",
	ReasonLBNoRoute:     "no-route",
	ReasonForwarded:     "forwarded",
	ReasonProxyRedirect: "to-l7-proxy",
	ReasonNoProxy:       "l7-no-proxy",
	ReasonSpoofed:       "source-spoofed",
}

// ReasonCodes lists every known reason code, for flag validation.
func ReasonCodes() []string {
	var out []string
	for _, n := range reasonNames {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

func (v Verdict) String() string {
	word := "DROP"
	if v.Verdict == VerdictAllow {
		word = "ALLOW"
	}
	src := netip.AddrPortFrom(netip.AddrFrom16(v.Saddr).Unmap(), v.Sport)
	dst := netip.AddrPortFrom(netip.AddrFrom16(v.Daddr).Unmap(), v.Dport)
	return fmt.Sprintf("%-5s %-7s endpoint %d  %s (%s) -> %s (%s) %s  %s",
		word, policy.Direction(v.Dir), v.Endpoint, src, identity.ID(v.SrcIdentity), dst, identity.ID(v.DstIdentity),
		policy.Proto(v.Proto), ReasonName(v.Reason))
}

// Filter selects verdict records; zero values select everything.
type Filter struct {
	Endpoint  uint16      // 0: any
	Identity  identity.ID // 0: any; matches source or destination
	DropsOnly bool
}

// Match reports whether v passes the filter.
func (f Filter) Match(v Verdict) bool {
	return (f.Endpoint == 0 || v.Endpoint == f.Endpoint) &&
		(f.Identity == 0 || identity.ID(v.SrcIdentity) == f.Identity || identity.ID(v.DstIdentity) == f.Identity) &&
		(!f.DropsOnly || v.Verdict == VerdictDrop)
}

// Stream reads records from the verdict ring until ctx ends or max
// matching records (0: no limit) were handed to fn.
func Stream(ctx context.Context, r *ringbuf.Reader, f Filter, max int, fn func(Verdict) error) error {
	n := 0
	for ctx.Err() == nil {
		r.SetDeadline(time.Now().Add(200 * time.Millisecond))
		rec, err := r.Read()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case err != nil:
			return err
		}
		v, err := DecodeVerdict(rec.RawSample)
		if err != nil {
			return err
		}
		if !f.Match(v) {
			continue
		}
		if err := fn(v); err != nil {
			return err
		}
		if n++; max > 0 && n >= max {
			return nil
		}
	}
	return nil
}

// WallTime is when the record was written: TsNs is bpf_ktime_get_ns,
// CLOCK_MONOTONIC, so records read late (after an agent restart) keep
// their own time.
func (v Verdict) WallTime() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil || uint64(ts.Nano()) < v.TsNs {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(uint64(ts.Nano()) - v.TsNs))
}
