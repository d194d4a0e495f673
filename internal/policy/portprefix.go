package policy

// PortPrefix is an aligned block of ports: the ports whose top Bits bits
// equal Port's. An LPM key on the port takes a range as a few of these.
type PortPrefix struct {
	Port uint16
	Bits uint8 // 0 (every port) .. 16 (one port)
}

// PortPrefixes splits lo..hi into the fewest aligned blocks (at most 30).
// The entry "every port" (lo = hi = 0 in a Key) is one block of 0 bits.
func PortPrefixes(lo, hi uint16) []PortPrefix {
	if lo == 0 && hi == 0 {
		return []PortPrefix{{0, 0}}
	}
	var out []PortPrefix
	cur := uint32(lo)
	for cur <= uint32(hi) {
		// The largest block starting at cur that is aligned and fits.
		size := uint32(1)
		for size < 1<<16 && cur%(size*2) == 0 && cur+size*2-1 <= uint32(hi) {
			size *= 2
		}
		bits := uint8(16)
		for s := size; s > 1; s /= 2 {
			bits--
		}
		out = append(out, PortPrefix{Port: uint16(cur), Bits: bits})
		cur += size
	}
	return out
}

// Contains reports whether port is in the block.
func (p PortPrefix) Contains(port uint16) bool {
	if p.Bits == 0 {
		return true
	}
	shift := 16 - p.Bits
	return port>>shift == p.Port>>shift
}
