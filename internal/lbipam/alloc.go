package lbipam

import (
	"cmp"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// PortKey is one protocol/port of a Service; Services sharing an address
// must have none in common.
type PortKey struct {
	Protocol string
	Port     int32
}

// Request is what a Service asks for.
type Request struct {
	Key        string // namespace/name
	Namespace  string
	Labels     labels.Set // the Service's labels plus the namespace/name keys
	IPv6       bool       // the family of the address (spec.ipFamilies[0])
	Requested  netip.Addr // invalid when any address will do
	SharingKey string     // empty: the address is not shared
	Ports      []PortKey
}

// Reason says why a Request got no address; it is the reason of the
// Service's condition and Event.
type Reason string

const (
	ReasonNoPool     Reason = "NoPool"               // no enabled pool selects the Service for its family
	ReasonNotInPool  Reason = "RequestedIPNotInPool" // the requested address is in no pool that may give it
	ReasonInUse      Reason = "RequestedIPInUse"     // the requested address is held by a Service it cannot share with
	ReasonExhausted  Reason = "PoolExhausted"        // every selecting pool is full
	ReasonBadRequest Reason = "InvalidRequest"       // annotations that cannot be read or disagree
	ReasonAllocated  Reason = "Allocated"
)

// Error is a failed allocation, with the cause for the Service's condition.
type Error struct {
	Reason  Reason
	Message string
}

func (e *Error) Error() string { return string(e.Reason) + ": " + e.Message }

// holder is a Service holding an address.
type holder struct {
	req Request
	ip  netip.Addr
}

// Allocator keeps which Service holds which address. It is not safe for
// concurrent use: the Controller calls it from its one worker.
type Allocator struct {
	pools     []*Pool // oldest first
	conflicts map[string]string
	bySvc     map[string]*holder
	byIP      map[netip.Addr][]*holder
	foreign   map[netip.Addr]string // addresses of Services another controller serves -> one of them
	foreignBy map[string][]netip.Addr
	freed     uint64 // counts releases: a change tells a waiting Service to try again
}

// NewAllocator returns an allocator without pools.
func NewAllocator() *Allocator {
	return &Allocator{
		conflicts: map[string]string{}, bySvc: map[string]*holder{}, byIP: map[netip.Addr][]*holder{},
		foreign: map[netip.Addr]string{}, foreignBy: map[string][]netip.Addr{},
	}
}

// SetPools replaces the pools. Holders are not touched: Ensure moves a
// Service whose address left every pool.
func (a *Allocator) SetPools(pools []*Pool) {
	a.pools = slices.Clone(pools)
	SortPools(a.pools)
	a.conflicts = Overlaps(a.pools)
}

// SortPools orders pools oldest first, by name among equals.
func SortPools(pools []*Pool) {
	slices.SortFunc(pools, func(x, y *Pool) int {
		return cmp.Or(x.Created.Compare(y.Created), cmp.Compare(x.Name, y.Name))
	})
}

// Conflict is the older pool that pool overlaps, or "".
func (a *Allocator) Conflict(pool string) string { return a.conflicts[pool] }

// usable: the pool may give new addresses to req.
func (a *Allocator) usable(p *Pool, req *Request) bool {
	return !p.Disabled && a.conflicts[p.Name] == "" && p.Selector.Matches(req.Labels)
}

// keeps: req may keep ip, which it holds already: ip is in a pool that
// selects it, disabled or not (disabling stops new allocations only).
func (a *Allocator) keeps(ip netip.Addr, req *Request) bool {
	if ip.Is6() != req.IPv6 || (req.Requested.IsValid() && req.Requested != ip) {
		return false
	}
	for _, p := range a.pools {
		if p.Contains(ip) && p.Selector.Matches(req.Labels) {
			return true
		}
	}
	return false
}

// clash returns a holder of ip that req cannot share it with, or "".
func (a *Allocator) clash(ip netip.Addr, req *Request) string {
	if other, ok := a.foreign[ip]; ok {
		return other + " (served by another load-balancer controller)"
	}
	for _, h := range a.byIP[ip] {
		if h.req.Key == req.Key {
			continue
		}
		if req.SharingKey == "" || h.req.SharingKey != req.SharingKey || h.req.Namespace != req.Namespace {
			return h.req.Key
		}
		for _, p := range req.Ports {
			if slices.Contains(h.req.Ports, p) {
				return fmt.Sprintf("%s (both use port %d/%s)", h.req.Key, p.Port, p.Protocol)
			}
		}
	}
	return ""
}

// Ensure gives req an address: the one it holds, else current (its
// address in the Service status, adopted after a restart) when it may
// keep it, else a new one. An address is never given to two Services
// that may not share it.
func (a *Allocator) Ensure(req Request, current netip.Addr) (netip.Addr, *Error) {
	if h := a.bySvc[req.Key]; h != nil {
		if a.keeps(h.ip, &req) && a.clash(h.ip, &req) == "" {
			h.req = req
			return h.ip, nil
		}
		a.Release(req.Key)
	}
	if a.Adopt(req, current) {
		return current, nil
	}
	if req.Requested.IsValid() {
		return a.ensureRequested(req)
	}
	if req.SharingKey != "" {
		for _, ip := range a.sortedIPs() {
			if a.byIP[ip][0].req.SharingKey == req.SharingKey && a.clash(ip, &req) == "" && a.poolFor(ip, &req) != nil {
				return a.hold(req, ip), nil
			}
		}
	}
	var full []string
	for _, p := range a.pools {
		if !a.usable(p, &req) {
			continue
		}
		for _, b := range p.Blocks {
			if b.From.Is6() != req.IPv6 {
				continue
			}
			if ip, ok := a.free(b); ok {
				return a.hold(req, ip), nil
			}
			if !slices.Contains(full, p.Name) {
				full = append(full, p.Name)
			}
		}
	}
	if len(full) == 0 {
		return netip.Addr{}, &Error{ReasonNoPool, fmt.Sprintf("no enabled pool without conflict selects this Service for %s", family(req.IPv6))}
	}
	return netip.Addr{}, &Error{ReasonExhausted, fmt.Sprintf("every %s address of the pools that select this Service is held (%s)", family(req.IPv6), strings.Join(full, ", "))}
}

// Adopt makes req hold current, the address in its status, when it may
// keep it and nobody it cannot share with holds it. The Controller adopts
// every Service's address, oldest Service first, before it gives out any
// new one, so a restart moves no Service.
func (a *Allocator) Adopt(req Request, current netip.Addr) bool {
	if !current.IsValid() || !a.keeps(current, &req) || a.clash(current, &req) != "" {
		return false
	}
	if h := a.bySvc[req.Key]; h != nil {
		if h.ip == current {
			h.req = req
			return true
		}
		a.Release(req.Key)
	}
	a.hold(req, current)
	return true
}

func (a *Allocator) ensureRequested(req Request) (netip.Addr, *Error) {
	ip := req.Requested
	if ip.Is6() != req.IPv6 {
		return netip.Addr{}, &Error{ReasonBadRequest, fmt.Sprintf("requested %s is not %s, the Service's first IP family", ip, family(req.IPv6))}
	}
	if a.poolFor(ip, &req) == nil {
		return netip.Addr{}, &Error{ReasonNotInPool, fmt.Sprintf("requested %s is in no enabled pool that selects this Service", ip)}
	}
	if other := a.clash(ip, &req); other != "" {
		return netip.Addr{}, &Error{ReasonInUse, fmt.Sprintf("requested %s is held by %s", ip, other)}
	}
	return a.hold(req, ip), nil
}

// poolFor is the first usable pool holding ip for req, or nil.
func (a *Allocator) poolFor(ip netip.Addr, req *Request) *Pool {
	for _, p := range a.pools {
		if a.usable(p, req) && p.Contains(ip) {
			return p
		}
	}
	return nil
}

// free returns the lowest address of b that nobody holds. It looks at
// most len(held)+1 addresses, so an IPv6 block of 2^64 costs no more
// than a small one.
func (a *Allocator) free(b Block) (netip.Addr, bool) {
	for ip := b.From; ip.IsValid() && b.Contains(ip); ip = ip.Next() {
		if len(a.byIP[ip]) == 0 && a.foreign[ip] == "" {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (a *Allocator) hold(req Request, ip netip.Addr) netip.Addr {
	h := &holder{req: req, ip: ip}
	a.bySvc[req.Key] = h
	a.byIP[ip] = append(a.byIP[ip], h)
	return ip
}

// Release frees what the Service key holds.
func (a *Allocator) Release(key string) {
	h := a.bySvc[key]
	if h == nil {
		return
	}
	delete(a.bySvc, key)
	a.freed++
	rest := slices.DeleteFunc(a.byIP[h.ip], func(o *holder) bool { return o == h })
	if len(rest) == 0 {
		delete(a.byIP, h.ip)
	} else {
		a.byIP[h.ip] = rest
	}
}

// SetForeign records the addresses that another controller gave the
// Service key (MetalLB, or a class that is not ours), so that they are
// never handed out again; nil forgets them.
func (a *Allocator) SetForeign(key string, ips []netip.Addr) {
	for _, ip := range a.foreignBy[key] {
		if a.foreign[ip] == key {
			delete(a.foreign, ip)
			a.freed++
		}
	}
	delete(a.foreignBy, key)
	if len(ips) > 0 {
		a.foreignBy[key] = ips
		for _, ip := range ips {
			a.foreign[ip] = key
		}
	}
}

// Freed counts the releases so far (of ours and of other controllers'
// addresses); when it changes, a Service that found no address may find one.
func (a *Allocator) Freed() uint64 { return a.freed }

// Holds returns the address Service key holds.
func (a *Allocator) Holds(key string) (netip.Addr, bool) {
	h := a.bySvc[key]
	if h == nil {
		return netip.Addr{}, false
	}
	return h.ip, true
}

// Usage is the number of held addresses in pool and how many are left.
func (a *Allocator) Usage(pool *Pool) (used int64, available *big.Int) {
	for ip := range a.byIP {
		if pool.Contains(ip) {
			used++
		}
	}
	for ip := range a.foreign {
		if pool.Contains(ip) && len(a.byIP[ip]) == 0 {
			used++
		}
	}
	return used, new(big.Int).Sub(pool.Size(), big.NewInt(used))
}

func (a *Allocator) sortedIPs() []netip.Addr {
	ips := make([]netip.Addr, 0, len(a.byIP))
	for ip := range a.byIP {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}
