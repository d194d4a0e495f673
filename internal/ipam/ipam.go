// Package ipam hands out pod addresses from the node's pod CIDRs (host-scope
// IPAM: each node owns its ranges, so no coordination between nodes).
//
// Every lease is one small file named after the address, written and
// fsynced (file and directory) before Allocate returns. A restarted agent
// reads the directory back, so an address handed out once is never handed
// out again until Release or GC removes its file. A lease file that cannot
// be read still holds its address: losing an owner is better than giving
// one address to two pods.
//
// Dual stack: at most one range per family; Allocate returns one address
// from each range. Only IPv4 has been exercised so far.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/statefile"
)

// Owner is who holds a lease: one interface of one container on one network.
type Owner struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

func (o Owner) String() string { return o.Network + "/" + o.ContainerID + "/" + o.IfName }

// Lease is one allocated address.
type Lease struct {
	Addr  netip.Addr `json:"addr"`
	Owner Owner      `json:"owner"`
	Since time.Time  `json:"since"`
	// Unreadable is set for a lease file whose content was lost (a crash
	// while writing it): the address stays taken, the owner is unknown.
	Unreadable bool `json:"unreadable,omitempty"`
}

var (
	// ErrExhausted: every address of a range is leased.
	ErrExhausted = errors.New("pod CIDR exhausted")
	// ErrNoRange: no pod CIDR is known yet (the Node has no spec.podCIDRs).
	ErrNoRange = errors.New("no pod CIDR to allocate from")
)

// Allocator is the node's address allocator. It is safe for concurrent use.
type Allocator struct {
	dir string

	mu     sync.Mutex
	ranges []netip.Prefix
	leases map[netip.Addr]Lease
	// cursor is where the next search of a range starts: after the last
	// address handed out, so a freed address is reused as late as possible
	// (a stale peer still talking to an old pod's address reaches nobody).
	cursor map[netip.Prefix]netip.Addr
}

// Open reads the leases under dir (created if missing).
func Open(dir string) (*Allocator, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam state directory: %w", err)
	}
	a := &Allocator{dir: dir, leases: map[netip.Addr]Lease{}, cursor: map[netip.Prefix]netip.Addr{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("ipam state directory: %w", err)
	}
	for _, e := range entries {
		addr, err := netip.ParseAddr(e.Name())
		if err != nil {
			// Temporary or foreign files; a lease file is named by its address.
			continue
		}
		a.leases[addr] = readLease(filepath.Join(dir, e.Name()), addr)
	}
	return a, nil
}

func readLease(path string, addr netip.Addr) Lease {
	l := Lease{Addr: addr, Unreadable: true}
	data, err := os.ReadFile(path)
	if err != nil {
		return l
	}
	var got Lease
	if json.Unmarshal(data, &got) != nil || got.Addr != addr {
		return l
	}
	return got
}

// SetRanges sets the pod CIDRs, at most one per family. Leases outside the
// new ranges are kept (their pods still use them) until released.
func (a *Allocator) SetRanges(ranges []netip.Prefix) error {
	seen := map[bool]bool{}
	out := make([]netip.Prefix, 0, len(ranges))
	for _, p := range ranges {
		if !p.IsValid() {
			return fmt.Errorf("pod CIDR %v is not valid", p)
		}
		p = p.Masked()
		if seen[p.Addr().Is4()] {
			return fmt.Errorf("pod CIDRs %v: more than one per address family", ranges)
		}
		seen[p.Addr().Is4()] = true
		if size(p) < 1 {
			return fmt.Errorf("pod CIDR %v has no usable address", p)
		}
		out = append(out, p)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ranges = out
	return nil
}

// Ranges returns the pod CIDRs.
func (a *Allocator) Ranges() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ranges)
}

// Allocate leases one address per range to owner and returns them. An owner
// that already holds leases (a retried ADD after a crash) gets them back.
// On any failure nothing new stays leased.
//
// Addresses are reserved under the lock and their files written outside
// it, so concurrent ADDs wait for each other's fsync only in the kernel.
// Callers must not allocate for and release the same owner at once.
func (a *Allocator) Allocate(owner Owner) ([]netip.Addr, error) {
	got, fresh, err := a.reserve(owner)
	if err != nil {
		return nil, err
	}
	for i, l := range fresh {
		if err := a.write(l); err != nil {
			for _, w := range fresh[:i] {
				// Best effort: a file left behind still only holds an address.
				_ = os.Remove(filepath.Join(a.dir, w.Addr.String()))
			}
			a.mu.Lock()
			for _, l := range fresh {
				delete(a.leases, l.Addr)
			}
			a.mu.Unlock()
			return nil, err
		}
	}
	return got, nil
}

// reserve picks owner's addresses and marks the new ones leased in memory.
func (a *Allocator) reserve(owner Owner) (got []netip.Addr, fresh []Lease, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.ranges) == 0 {
		return nil, nil, ErrNoRange
	}
	for _, r := range a.ranges {
		if addr, ok := a.heldIn(owner, r); ok {
			got = append(got, addr)
			continue
		}
		addr, err := a.free(r)
		if err != nil {
			for _, l := range fresh {
				delete(a.leases, l.Addr)
			}
			return nil, nil, err
		}
		l := Lease{Addr: addr, Owner: owner, Since: time.Now().UTC()}
		a.leases[addr] = l
		a.cursor[r] = addr
		fresh = append(fresh, l)
		got = append(got, addr)
	}
	return got, fresh, nil
}

func (a *Allocator) heldIn(owner Owner, r netip.Prefix) (netip.Addr, bool) {
	for addr, l := range a.leases {
		if l.Owner == owner && r.Contains(addr) {
			return addr, true
		}
	}
	return netip.Addr{}, false
}

// free finds an unleased address of r, searching from after the cursor.
func (a *Allocator) free(r netip.Prefix) (netip.Addr, error) {
	first, last := bounds(r)
	start := first
	if c, ok := a.cursor[r]; ok && r.Contains(c) && c.Less(last) {
		start = c.Next()
	}
	addr := start
	for {
		if _, taken := a.leases[addr]; !taken {
			return addr, nil
		}
		if addr == last {
			addr = first
		} else {
			addr = addr.Next()
		}
		if addr == start {
			return netip.Addr{}, fmt.Errorf("%w: all %d usable addresses of %s are leased", ErrExhausted, size(r), r)
		}
	}
}

// write creates the lease file; it exists on disk when write returns.
func (a *Allocator) write(l Lease) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := statefile.Create(filepath.Join(a.dir, l.Addr.String()), data, 0o600); err != nil {
		return fmt.Errorf("lease %s: %w", l.Addr, err)
	}
	return nil
}

// Release frees every address owner holds and returns them. Releasing
// nothing is not an error (DEL of an unknown container).
func (a *Allocator) Release(owner Owner) ([]netip.Addr, error) {
	return a.releaseWhere(func(l Lease) bool { return !l.Unreadable && l.Owner == owner })
}

// releaseWhere removes the leases match selects: each file first, then the
// address becomes free in memory, so a new lease never meets an old file.
func (a *Allocator) releaseWhere(match func(Lease) bool) ([]netip.Addr, error) {
	a.mu.Lock()
	var picked []netip.Addr
	for addr, l := range a.leases {
		if match(l) {
			picked = append(picked, addr)
		}
	}
	a.mu.Unlock()
	slices.SortFunc(picked, netip.Addr.Compare)
	var freed []netip.Addr
	var errs []error
	for _, addr := range picked {
		err := os.Remove(filepath.Join(a.dir, addr.String()))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("release %s: %w", addr, err))
			continue
		}
		a.mu.Lock()
		delete(a.leases, addr)
		a.mu.Unlock()
		freed = append(freed, addr)
	}
	if len(freed) > 0 {
		errs = append(errs, statefile.SyncDir(a.dir))
	}
	return freed, errors.Join(errs...)
}

// GC releases the leases of network whose owner keep rejects, and
// unreadable leases (no ADD that wrote them ever succeeded), and returns
// what it released.
func (a *Allocator) GC(network string, keep func(Owner) bool) ([]Lease, error) {
	before := map[netip.Addr]Lease{}
	a.mu.Lock()
	for addr, l := range a.leases {
		before[addr] = l
	}
	a.mu.Unlock()
	freed, err := a.releaseWhere(func(l Lease) bool {
		return l.Unreadable || (l.Owner.Network == network && !keep(l.Owner))
	})
	out := make([]Lease, 0, len(freed))
	for _, addr := range freed {
		out = append(out, before[addr])
	}
	return out, err
}

// Leases returns every lease, ordered by address.
func (a *Allocator) Leases() []Lease {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Lease, 0, len(a.leases))
	for _, l := range a.leases {
		out = append(out, l)
	}
	slices.SortFunc(out, func(x, y Lease) int { return x.Addr.Compare(y.Addr) })
	return out
}

// bounds are the first and last address of r a pod may get: an IPv4 range
// of 4 or more addresses loses its network and broadcast addresses, an IPv6
// range its subnet-router anycast address (the first).
func bounds(r netip.Prefix) (first, last netip.Addr) {
	first = r.Addr()
	last = lastAddr(r)
	bits := r.Addr().BitLen() - r.Bits()
	if r.Addr().Is4() && bits >= 2 {
		return first.Next(), last.Prev()
	}
	if r.Addr().Is6() && bits >= 1 {
		return first.Next(), last
	}
	return first, last
}

func lastAddr(r netip.Prefix) netip.Addr {
	b := r.Addr().AsSlice()
	for i := r.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// size is the number of usable addresses of r, saturated at 1<<30.
func size(r netip.Prefix) int {
	bits := r.Addr().BitLen() - r.Bits()
	if bits >= 30 {
		return 1 << 30
	}
	n := 1 << bits
	if r.Addr().Is4() && bits >= 2 {
		return n - 2
	}
	if r.Addr().Is6() && bits >= 1 {
		return n - 1
	}
	return n
}
