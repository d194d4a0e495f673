// Package lbdump renders the load-balancer maps as sorted, human-readable
// lines, and parses such lines back. Tests compare map contents through it,
// and fill maps from it to stand for what an earlier agent left.
//
//	services: 10.96.0.10:80/TCP slot 0 -> count=2 revnat=1 flags=affinity affinity=10800
//	services: 10.96.0.10:80/TCP slot 1 -> backend=1
//	backends: 1 -> 10.0.1.2:8080/TCP active
//	revnat: 1 -> 10.96.0.10:80
//	ranges: 1 -> 203.0.113.0/24
package lbdump

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Contents is everything the three load-balancer maps hold.
type Contents struct {
	Services map[lbmap.ServiceKey]lbmap.ServiceValue
	Backends map[uint32]lbmap.Backend
	RevNat   map[uint32]lbmap.RevNat
	// Ranges is fp_source_ranges; nil when the maps have none.
	Ranges map[lbmap.SourceRangeKey]uint8
}

// Read returns what the maps hold.
func Read(m lbmap.Maps) (Contents, error) {
	var c Contents
	var err error
	if c.Services, err = m.Services.All(); err != nil {
		return c, err
	}
	if c.Backends, err = m.Backends.All(); err != nil {
		return c, err
	}
	if c.RevNat, err = m.RevNat.All(); err != nil {
		return c, err
	}
	if m.SourceRanges != nil {
		c.Ranges, err = m.SourceRanges.All()
	}
	return c, err
}

// Write puts every entry of c into the maps, over what is there.
func (c Contents) Write(m lbmap.Maps) error {
	sk, sv := split(c.Services)
	if err := m.Services.Update(sk, sv); err != nil {
		return err
	}
	bk, bv := split(c.Backends)
	if err := m.Backends.Update(bk, bv); err != nil {
		return err
	}
	rk, rv := split(c.RevNat)
	if err := m.RevNat.Update(rk, rv); err != nil {
		return err
	}
	if len(c.Ranges) == 0 {
		return nil
	}
	if m.SourceRanges == nil {
		return fmt.Errorf("no source-range map for %d ranges", len(c.Ranges))
	}
	gk, gv := split(c.Ranges)
	return m.SourceRanges.Update(gk, gv)
}

// Delete removes the keys of c from the maps; values are ignored.
func (c Contents) Delete(m lbmap.Maps) error {
	if err := m.Services.Delete(slices.Collect(maps.Keys(c.Services))); err != nil {
		return err
	}
	if err := m.Backends.Delete(slices.Collect(maps.Keys(c.Backends))); err != nil {
		return err
	}
	if err := m.RevNat.Delete(slices.Collect(maps.Keys(c.RevNat))); err != nil {
		return err
	}
	if m.SourceRanges == nil {
		return nil
	}
	return m.SourceRanges.Delete(slices.Collect(maps.Keys(c.Ranges)))
}

func split[K comparable, V any](m map[K]V) ([]K, []V) {
	ks := make([]K, 0, len(m))
	vs := make([]V, 0, len(m))
	for k, v := range m {
		ks = append(ks, k)
		vs = append(vs, v)
	}
	return ks, vs
}

// String renders c: services by address, port, protocol, scope and slot,
// then backends and rev-NAT entries by ID. One line per entry.
func (c Contents) String() string {
	var b strings.Builder
	keys := slices.SortedFunc(maps.Keys(c.Services), compareKeys)
	for _, k := range keys {
		fmt.Fprintf(&b, "services: %s -> %s\n", serviceKey(k), serviceValue(k.Slot, c.Services[k]))
	}
	for _, id := range slices.Sorted(maps.Keys(c.Backends)) {
		v := c.Backends[id]
		fmt.Fprintf(&b, "backends: %d -> %s %s\n", id, l4(v.Addr, v.Port, v.Proto), stateName(v.State))
	}
	for _, id := range slices.Sorted(maps.Keys(c.RevNat)) {
		v := c.RevNat[id]
		fmt.Fprintf(&b, "revnat: %d -> %s\n", id, netip.AddrPortFrom(v.Addr.IP(), v.Port))
	}
	ranges := slices.SortedFunc(maps.Keys(c.Ranges), lbmap.CompareSourceRangeKeys)
	for _, k := range ranges {
		fmt.Fprintf(&b, "ranges: %d -> %s\n", k.RevNatID, rangePrefix(k))
	}
	return b.String()
}

// rangePrefix shows a source-range key's prefix, without the bits of the
// rev-NAT ID and of the IPv4-mapped form.
func rangePrefix(k lbmap.SourceRangeKey) string {
	bits := int(k.PrefixLen) - 32
	a := k.Addr.IP()
	if a.Is4() {
		bits -= 96
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return fmt.Sprintf("%s/bits-%d", a, k.PrefixLen)
	}
	return p.String()
}

func compareKeys(a, b lbmap.ServiceKey) int {
	if c := bytes.Compare(a.Addr[:], b.Addr[:]); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.Scope, b.Scope), cmp.Compare(a.Slot, b.Slot))
}

func l4(a lbmap.Addr, port uint16, proto uint8) string {
	return netip.AddrPortFrom(a.IP(), port).String() + "/" + lbmap.ProtoName(proto)
}

func serviceKey(k lbmap.ServiceKey) string {
	s := l4(k.Addr, k.Port, k.Proto)
	switch k.Scope {
	case lbmap.ScopeExternal:
	case lbmap.ScopeInternal:
		s += " internal"
	default:
		s += fmt.Sprintf(" scope-%d", k.Scope)
	}
	return s + fmt.Sprintf(" slot %d", k.Slot)
}

// serviceValue shows slot 0's fields always and a backend slot's backend
// always; any other field only when it is not zero, as that is corruption.
func serviceValue(slot uint16, v lbmap.ServiceValue) string {
	var f []string
	if slot != 0 || v.BackendID != 0 {
		f = append(f, fmt.Sprintf("backend=%d", v.BackendID))
	}
	if slot == 0 || v.Count != 0 {
		f = append(f, fmt.Sprintf("count=%d", v.Count))
	}
	if slot == 0 || v.RevNatID != 0 {
		f = append(f, fmt.Sprintf("revnat=%d", v.RevNatID))
	}
	if slot == 0 || v.Flags != 0 {
		f = append(f, "flags="+flagNames(v.Flags))
	}
	if slot == 0 || v.AffinityTimeout != 0 {
		f = append(f, fmt.Sprintf("affinity=%d", v.AffinityTimeout))
	}
	return strings.Join(f, " ")
}

func flagNames(flags uint16) string {
	names := lbmap.FlagNames(flags)
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, "|")
}

func stateName(s uint8) string { return lbmap.StateName(s) }

// Parse reads lines in the form String writes. Blank lines and lines
// starting with # are skipped.
func Parse(text string) (Contents, error) {
	c := Contents{
		Services: map[lbmap.ServiceKey]lbmap.ServiceValue{},
		Backends: map[uint32]lbmap.Backend{},
		RevNat:   map[uint32]lbmap.RevNat{},
		Ranges:   map[lbmap.SourceRangeKey]uint8{},
	}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := c.parseLine(line); err != nil {
			return c, fmt.Errorf("line %d: %q: %w", i+1, line, err)
		}
	}
	return c, nil
}

func (c Contents) parseLine(line string) error {
	kind, rest, _ := strings.Cut(line, ": ")
	key, val, ok := strings.Cut(rest, " -> ")
	if !ok {
		return fmt.Errorf("no \" -> \"")
	}
	switch kind {
	case "services":
		k, err := parseServiceKey(key)
		if err != nil {
			return err
		}
		v, err := parseServiceValue(val)
		c.Services[k] = v
		return err
	case "backends":
		id, err := parseUint(key, 32)
		if err != nil {
			return err
		}
		v, err := parseBackend(val)
		c.Backends[uint32(id)] = v
		return err
	case "revnat":
		id, err := parseUint(key, 32)
		if err != nil {
			return err
		}
		ap, err := netip.ParseAddrPort(val)
		c.RevNat[uint32(id)] = lbmap.RevNat{Addr: lbmap.AddrFrom(ap.Addr()), Port: ap.Port()}
		return err
	case "ranges":
		id, err := parseUint(key, 32)
		if err != nil {
			return err
		}
		p, err := netip.ParsePrefix(val)
		c.Ranges[lbmap.SourceRangeKeyOf(uint32(id), p)] = 1
		return err
	}
	return fmt.Errorf("unknown map %q", kind)
}

func parseServiceKey(s string) (lbmap.ServiceKey, error) {
	var k lbmap.ServiceKey
	f := strings.Fields(s)
	if len(f) < 3 || f[len(f)-2] != "slot" {
		return k, fmt.Errorf("want ADDR:PORT/PROTO [internal] slot N")
	}
	a, port, proto, err := parseL4(f[0])
	if err != nil {
		return k, err
	}
	k.Addr, k.Port, k.Proto = a, port, proto
	switch {
	case len(f) == 3:
	case len(f) == 4 && f[1] == "internal":
		k.Scope = lbmap.ScopeInternal
	case len(f) == 4 && strings.HasPrefix(f[1], "scope-"):
		n, err := parseUint(strings.TrimPrefix(f[1], "scope-"), 8)
		if err != nil {
			return k, err
		}
		k.Scope = uint8(n)
	default:
		return k, fmt.Errorf("want ADDR:PORT/PROTO [internal] slot N")
	}
	slot, err := parseUint(f[len(f)-1], 16)
	k.Slot = uint16(slot)
	return k, err
}

func parseServiceValue(s string) (lbmap.ServiceValue, error) {
	var v lbmap.ServiceValue
	for _, field := range strings.Fields(s) {
		name, val, _ := strings.Cut(field, "=")
		var n uint64
		var err error
		switch name {
		case "backend":
			n, err = parseUint(val, 32)
			v.BackendID = uint32(n)
		case "count":
			n, err = parseUint(val, 16)
			v.Count = uint16(n)
		case "revnat":
			n, err = parseUint(val, 32)
			v.RevNatID = uint32(n)
		case "affinity":
			n, err = parseUint(val, 32)
			v.AffinityTimeout = uint32(n)
		case "flags":
			v.Flags, err = parseFlags(val)
		default:
			err = fmt.Errorf("unknown field %q", name)
		}
		if err != nil {
			return v, err
		}
	}
	return v, nil
}

func parseFlags(s string) (uint16, error) {
	if s == "-" {
		return 0, nil
	}
	var flags uint16
next:
	for _, name := range strings.Split(s, "|") {
		for _, fb := range lbmap.ServiceFlagNames {
			if name == fb.Name {
				flags |= fb.Bit
				continue next
			}
		}
		n, err := strconv.ParseUint(name, 0, 16)
		if err != nil {
			return 0, fmt.Errorf("unknown flag %q", name)
		}
		flags |= uint16(n)
	}
	return flags, nil
}

func parseBackend(s string) (lbmap.Backend, error) {
	var v lbmap.Backend
	l4s, state, ok := strings.Cut(s, " ")
	if !ok {
		return v, fmt.Errorf("want ADDR:PORT/PROTO STATE")
	}
	a, port, proto, err := parseL4(l4s)
	if err != nil {
		return v, err
	}
	v.Addr, v.Port, v.Proto = a, port, proto
	if i := slices.Index(lbmap.BackendStateNames, state); i >= 0 {
		v.State = uint8(i)
		return v, nil
	}
	n, err := parseUint(strings.TrimPrefix(state, "state-"), 8)
	v.State = uint8(n)
	return v, err
}

func parseL4(s string) (lbmap.Addr, uint16, uint8, error) {
	ap, protoName, ok := strings.Cut(s, "/")
	if !ok {
		return lbmap.Addr{}, 0, 0, fmt.Errorf("%q: want ADDR:PORT/PROTO", s)
	}
	addrPort, err := netip.ParseAddrPort(ap)
	if err != nil {
		return lbmap.Addr{}, 0, 0, err
	}
	var proto uint8
	switch protoName {
	case "TCP":
		proto = lbmap.ProtoTCP
	case "UDP":
		proto = lbmap.ProtoUDP
	case "SCTP":
		proto = lbmap.ProtoSCTP
	default:
		n, err := parseUint(strings.TrimPrefix(protoName, "proto-"), 8)
		if err != nil {
			return lbmap.Addr{}, 0, 0, fmt.Errorf("protocol %q: %w", protoName, err)
		}
		proto = uint8(n)
	}
	return lbmap.AddrFrom(addrPort.Addr()), addrPort.Port(), proto, nil
}

func parseUint(s string, bits int) (uint64, error) {
	return strconv.ParseUint(s, 10, bits)
}
