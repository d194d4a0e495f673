package pkttest

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

// The IPv4 header from RFC 1071's companion example (Wikipedia's "IPv4
// header checksum" worked example): checksum 0xb861.
func TestChecksumKnownHeader(t *testing.T) {
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
		0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := Checksum(h); got != 0xb861 {
		t.Fatalf("checksum %#04x, want 0xb861", got)
	}
	binary.BigEndian.PutUint16(h[10:12], 0xb861)
	if got := Checksum(h); got != 0 {
		t.Fatalf("checksum over a correct header %#04x, want 0", got)
	}
}

func TestChecksumOddLength(t *testing.T) {
	// 0x0102 + 0x0300 = 0x0402 -> ^ = 0xfbfd
	if got := Checksum([]byte{1, 2, 3}); got != 0xfbfd {
		t.Fatalf("checksum %#04x, want 0xfbfd", got)
	}
	if Checksum([]byte{1}, []byte{2, 3}) != Checksum([]byte{1, 2, 3}) {
		t.Fatal("chunks are not summed as their concatenation")
	}
}

var flow = Flow{Src: netip.MustParseAddrPort("10.0.0.2:40000"), Dst: netip.MustParseAddrPort("10.96.0.10:80")}

func TestBuiltFramesVerifyAndParse(t *testing.T) {
	frames := map[string][]byte{
		"tcp":        TCPFrame(flow, SYN, []byte("odd")),
		"udp":        UDPFrame(flow, []byte("hello")),
		"udp-none":   UDPFrameNoChecksum(flow, []byte("hello")),
		"sctp":       SCTPFrame(flow, make([]byte, 16), false),
		"icmp-error": ICMPErrorFrame(flow.Dst.Addr(), flow.Src.Addr(), ICMPDestUnreach, ICMPCodePortUnr, 0, TCPSegment(flow, SYN, nil)),
	}
	for name, f := range frames {
		if err := VerifyChecksums(f); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		p, err := Parse(f)
		if err != nil {
			t.Errorf("%s: parse: %v", name, err)
			continue
		}
		if name == "icmp-error" {
			if p.Quote == nil || p.Quote.SrcPort != 40000 || p.Quote.DstPort != 80 || len(p.Quote.L4) != 8 {
				t.Errorf("%s: quote %+v", name, p.Quote)
			}
			continue
		}
		if p.Flow() != flow {
			t.Errorf("%s: flow %v, want %v", name, p.Flow(), flow)
		}
	}
}

// Every checksum the verifier knows must catch a flipped bit.
func TestVerifyChecksumsCatchesCorruption(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
		off   int // byte to corrupt
		want  string
	}{
		{"ipv4 header", TCPFrame(flow, SYN, nil), EthLen + 8, "ipv4 header"},
		{"tcp", TCPFrame(flow, SYN, nil), EthLen + IPv4Len + 4, "tcp"},
		{"udp", UDPFrame(flow, []byte("x")), EthLen + IPv4Len + UDPLen, "udp"},
		{"sctp", SCTPFrame(flow, make([]byte, 8), false), EthLen + IPv4Len + SCTPLen, "sctp"},
		{"icmp", ICMPFrame(flow.Src.Addr(), flow.Dst.Addr(), ICMP{Type: ICMPEchoRequest}, []byte("ping")), EthLen + IPv4Len + ICMPLen, "icmp"},
		{"quoted header", ICMPErrorFrame(flow.Dst.Addr(), flow.Src.Addr(), ICMPDestUnreach, 3, 0, TCPSegment(flow, SYN, nil)), EthLen + IPv4Len + ICMPLen + 8, "quoted"},
	}
	for _, c := range cases {
		f := append([]byte(nil), c.frame...)
		f[c.off] ^= 0x10
		err := VerifyChecksums(f)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: corrupted byte %d: error %v, want one naming %q", c.name, c.off, err, c.want)
		}
	}
}

func TestParseRejectsTruncation(t *testing.T) {
	f := TCPFrame(flow, SYN, nil)
	for n := 0; n < len(f); n++ {
		if _, err := Parse(f[:n]); err == nil && n >= EthLen {
			t.Errorf("frame cut to %d of %d bytes parsed without error", n, len(f))
		}
	}
}

func TestForwardedDecrementsTTLAndKeepsTheHeaderValid(t *testing.T) {
	f := Flow{Src: netip.MustParseAddrPort("10.0.0.2:1000"), Dst: netip.MustParseAddrPort("10.0.1.5:80")}
	in := TCPFrame(f, SYN, []byte("x"))
	dst, src := MAC{2, 0, 0, 0, 0, 9}, MAC{2, 0, 0, 0, 0, 8}
	out := Forwarded(in, dst, src)
	p, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.DstMAC != dst || p.SrcMAC != src || p.IP.TTL != 63 || p.Flow() != f {
		t.Errorf("forwarded: MACs %v -> %v, TTL %d, flow %v", p.SrcMAC, p.DstMAC, p.IP.TTL, p.Flow())
	}
	if err := VerifyChecksums(out); err != nil {
		t.Error(err)
	}
	if q, _ := Parse(in); q.IP.TTL != 64 {
		t.Errorf("the input frame changed: TTL %d", q.IP.TTL)
	}
}
