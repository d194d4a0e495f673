package loadbalancer

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
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

// normalize checks svc and returns its frontends sorted by map key (see
// specIndex), with addresses unmapped so 10.0.0.1 and ::ffff:10.0.0.1 are
// one frontend. The slice is the table's own copy, exactly as long as it
// needs: at 50,000 services a Go map per service cost ten times as much.
func normalize(svc Service, maxBackends int) ([]FrontendSpec, error) {
	p := &problems{svc: svc.Name}
	if svc.Name.Name == "" {
		p.add("name is empty")
	}
	out := make([]FrontendSpec, 0, len(svc.Frontends))
	var where map[lbmap.ServiceKey]int // only for many frontends; else a scan of out
	if len(svc.Frontends) > 16 {
		where = make(map[lbmap.ServiceKey]int, len(svc.Frontends))
	}
	idx := make([]int, 0, len(svc.Frontends)) // idx[k] is out[k]'s index in svc.Frontends
	for i, fe := range svc.Frontends {
		fe.Addr = fe.Addr.Unmap()
		at := place{i: i, fe: fe.Frontend, bi: -1}
		checkFrontend(p, at, fe)
		fe.Backends = checkBackends(p, at, fe, maxBackends)
		key := frontendKey(fe.Frontend)
		if j, dup := firstWith(out, idx, where, key); dup {
			p.add("%s: same frontend as frontends[%d]", at, j)
			continue
		}
		if where != nil {
			where[key] = i
		}
		out = append(out, fe)
		idx = append(idx, i)
	}
	checkTwins(p, out, idx, where)
	if err := p.err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b FrontendSpec) int { return compareKeys(frontendKey(a.Frontend), frontendKey(b.Frontend)) })
	return slices.Clip(out), nil
}

// checkTwins refuses an internal frontend without the external one of the
// same address, port and protocol: the datapath looks an INTERNAL entry up
// only when its EXTERNAL twin's flag says it is there, so alone it would
// never be found.
func checkTwins(p *problems, out []FrontendSpec, idx []int, where map[lbmap.ServiceKey]int) {
	for k, fe := range out {
		if fe.Scope != ScopeInternal {
			continue
		}
		if _, ok := firstWith(out, idx, where, externalTwin(frontendKey(fe.Frontend))); !ok {
			at := place{i: idx[k], fe: fe.Frontend, bi: -1}
			p.add("%s: internal frontend without the external frontend %s, through which the datapath finds it", at, fe.L4Addr)
		}
	}
}

// firstWith finds the frontend already accepted with key: its index in the
// service's list.
func firstWith(out []FrontendSpec, idx []int, where map[lbmap.ServiceKey]int, key lbmap.ServiceKey) (int, bool) {
	if where != nil {
		j, ok := where[key]
		return j, ok
	}
	for k, fe := range out {
		if frontendKey(fe.Frontend) == key {
			return idx[k], true
		}
	}
	return 0, false
}

// specIndex finds key in specs, sorted by normalize.
func specIndex(specs []FrontendSpec, key lbmap.ServiceKey) (int, bool) {
	return slices.BinarySearchFunc(specs, key, func(s FrontendSpec, k lbmap.ServiceKey) int {
		return compareKeys(frontendKey(s.Frontend), k)
	})
}

func hasKey(specs []FrontendSpec, key lbmap.ServiceKey) bool {
	_, ok := specIndex(specs, key)
	return ok
}

// specOf returns the spec of key in specs, sorted by normalize.
func specOf(specs []FrontendSpec, key lbmap.ServiceKey) (FrontendSpec, bool) {
	if i, ok := specIndex(specs, key); ok {
		return specs[i], true
	}
	return FrontendSpec{}, false
}

// place names a frontend, or one of its backends, in a problem. It is
// formatted only when there is a problem: an Upsert of 50,000 good
// services formats nothing.
type place struct {
	i  int // index in Service.Frontends
	fe Frontend
	bi int // index in its Backends, -1 for the frontend itself
	b  L4Addr
}

func (w place) String() string {
	s := fmt.Sprintf("frontends[%d] (%s)", w.i, w.fe)
	if w.bi >= 0 {
		s += fmt.Sprintf(": backends[%d] (%s)", w.bi, w.b)
	}
	return s
}

func (w place) backend(i int, b L4Addr) place {
	w.bi, w.b = i, b
	return w
}

func checkFrontend(p *problems, at place, fe FrontendSpec) {
	checkAddr(p, at, fe.Addr, fe.Type == NodePort)
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
func checkBackends(p *problems, at place, fe FrontendSpec, maxBackends int) []Backend {
	if n := len(fe.Backends); n > maxBackends {
		p.add("%s: %d backends, more than the limit of %d", at, n, maxBackends)
		return nil
	}
	out := make([]Backend, len(fe.Backends))
	var seen map[L4Addr]int // only for many backends; else a scan of out
	if len(fe.Backends) > 16 {
		seen = make(map[L4Addr]int, len(fe.Backends))
	}
	for i, b := range fe.Backends {
		b.Addr = b.Addr.Unmap()
		out[i] = b
		bat := at.backend(i, b.L4Addr)
		checkAddr(p, bat, b.Addr, false)
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
		if j, dup := sameBackend(out[:i], seen, b.L4Addr); dup {
			p.add("%s: same backend as backends[%d]", bat, j)
		}
		if seen != nil {
			seen[b.L4Addr] = i
		}
	}
	return out
}

// sameBackend finds the last backend before this one at a: its index.
func sameBackend(before []Backend, seen map[L4Addr]int, a L4Addr) (int, bool) {
	if seen != nil {
		j, ok := seen[a]
		return j, ok
	}
	for j := len(before) - 1; j >= 0; j-- {
		if before[j].L4Addr == a {
			return j, true
		}
	}
	return 0, false
}

// checkAddr refuses what the datapath cannot match or send to. The
// unspecified address is allowed only where the caller says so: a NodePort
// frontend on 0.0.0.0 stands for every node address, as in Cilium.
func checkAddr(p *problems, at place, a netip.Addr, unspecifiedOK bool) {
	switch {
	case !a.IsValid():
		p.add("%s: address: missing", at)
	case a.Zone() != "":
		p.add("%s: address: %s has a zone, which the maps cannot hold", at, a)
	case a.IsMulticast():
		p.add("%s: address: %s is multicast", at, a)
	case a.IsUnspecified() && !unspecifiedOK:
		p.add("%s: address: %s is unspecified", at, a)
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
