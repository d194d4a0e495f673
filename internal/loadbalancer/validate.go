package loadbalancer

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// ErrInvalid marks an Upsert refused because the service itself is wrong;
// nothing of such a service is applied.
var ErrInvalid = errors.New("invalid service")

// MaxSlots is the most backends one frontend can have: slot 0's count is 16 bits.
const MaxSlots = math.MaxUint16

// maxReported bounds how many problems one error lists, so a service with
// 50,000 bad backends gives a readable error.
const maxReported = 20

// problems collects validation errors about one service.
type problems struct {
	svc  ServiceName
	list []string
	more int
}

func (p *problems) add(format string, args ...any) {
	if len(p.list) >= maxReported {
		p.more++
		return
	}
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	errs := make([]error, 0, len(p.list)+1)
	for _, s := range p.list {
		errs = append(errs, invalidError("service "+p.svc.String()+": "+s))
	}
	if p.more > 0 {
		errs = append(errs, invalidError(fmt.Sprintf("service %s: and %d more problems", p.svc, p.more)))
	}
	return errors.Join(errs...)
}

// invalidError is one problem with a service; errors.Is(err, ErrInvalid) holds.
type invalidError string

func (e invalidError) Error() string        { return string(e) }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

// normalize checks svc and returns its frontends by map key, with addresses
// unmapped so 10.0.0.1 and ::ffff:10.0.0.1 are one frontend.
func normalize(svc Service, maxBackends int) (map[lbmap.ServiceKey]FrontendSpec, error) {
	p := &problems{svc: svc.Name}
	if svc.Name.Name == "" {
		p.add("name is empty")
	}
	out := make(map[lbmap.ServiceKey]FrontendSpec, len(svc.Frontends))
	where := make(map[lbmap.ServiceKey]int, len(svc.Frontends))
	for i, fe := range svc.Frontends {
		fe.Addr = fe.Addr.Unmap()
		at := fmt.Sprintf("frontends[%d] (%s)", i, fe.Frontend)
		checkFrontend(p, at, fe)
		fe.Backends = checkBackends(p, at, fe, maxBackends)
		key := frontendKey(fe.Frontend)
		if j, dup := where[key]; dup {
			p.add("%s: same frontend as frontends[%d]", at, j)
			continue
		}
		where[key] = i
		out[key] = fe
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return out, nil
}

func checkFrontend(p *problems, at string, fe FrontendSpec) {
	checkAddr(p, at+": address", fe.Addr, fe.Type == NodePort)
	if fe.Port == 0 {
		p.add("%s: port 0 is out of range 1-65535", at)
	}
	if !fe.Proto.valid() {
		p.add("%s: protocol %s is not TCP, UDP or SCTP", at, fe.Proto)
	}
	if fe.Scope != ScopeExternal && fe.Scope != ScopeInternal {
		p.add("%s: scope %d is not external (0) or internal (1)", at, fe.Scope)
	}
	if fe.Type > LoadBalancer {
		p.add("%s: type %s is unknown", at, fe.Type)
	}
	for i, r := range fe.SourceRanges {
		if !r.IsValid() || !r.Addr().Is4() {
			p.add("%s: sourceRanges[%d] %s is not an IPv4 prefix", at, i, r)
		}
	}
	t := fe.AffinityTimeout
	if t < 0 || t%time.Second != 0 || t > math.MaxUint32*time.Second {
		p.add("%s: affinity timeout %s is not a whole number of seconds from 0 to %d", at, t, uint32(math.MaxUint32))
	}
}

// checkBackends validates the backends of one frontend and returns them
// with addresses unmapped.
func checkBackends(p *problems, at string, fe FrontendSpec, maxBackends int) []Backend {
	if n := len(fe.Backends); n > maxBackends {
		p.add("%s: %d backends, more than the limit of %d", at, n, maxBackends)
		return nil
	}
	out := make([]Backend, len(fe.Backends))
	seen := make(map[L4Addr]int, len(fe.Backends))
	for i, b := range fe.Backends {
		b.Addr = b.Addr.Unmap()
		out[i] = b
		bat := fmt.Sprintf("%s: backends[%d] (%s)", at, i, b.L4Addr)
		checkAddr(p, bat+": address", b.Addr, false)
		if b.Addr.IsValid() && fe.Addr.IsValid() && b.Addr.Is4() != fe.Addr.Is4() {
			p.add("%s: address family differs from the frontend's", bat)
		}
		if b.Port == 0 {
			p.add("%s: port 0 is out of range 1-65535", bat)
		}
		if b.Proto != fe.Proto {
			p.add("%s: protocol %s differs from the frontend's %s", bat, b.Proto, fe.Proto)
		}
		if b.State > Quarantined {
			p.add("%s: state %s is unknown", bat, b.State)
		}
		if j, dup := seen[b.L4Addr]; dup {
			p.add("%s: same backend as backends[%d]", bat, j)
		}
		seen[b.L4Addr] = i
	}
	return out
}

// checkAddr refuses what the datapath cannot match or send to. The
// unspecified address is allowed only where the caller says so: a NodePort
// frontend on 0.0.0.0 stands for every node address, as in Cilium.
func checkAddr(p *problems, at string, a netip.Addr, unspecifiedOK bool) {
	switch {
	case !a.IsValid():
		p.add("%s: missing", at)
	case a.Zone() != "":
		p.add("%s: %s has a zone, which the maps cannot hold", at, a)
	case a.IsMulticast():
		p.add("%s: %s is multicast", at, a)
	case a.IsUnspecified() && !unspecifiedOK:
		p.add("%s: %s is unspecified", at, a)
	}
}

// frontendKey is the slot-0 key of the frontend's service entry.
func frontendKey(f Frontend) lbmap.ServiceKey {
	return lbmap.ServiceKey{
		Addr:  lbmap.AddrFrom(f.Addr),
		Port:  f.Port,
		Proto: uint8(f.Proto),
		Scope: uint8(f.Scope),
	}
}
