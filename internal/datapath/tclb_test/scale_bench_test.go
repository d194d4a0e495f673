package tclb_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// BenchmarkNewFlowByServices times fp_tc_lb on the first packet of a new
// TCP flow (a SYN to one of N VIPs picked at random, each with two
// backends) with N = 1, 1,000, 10,000 and 20,000 services in the map (three
// entries each: the test object's map holds 65,536). It reports
// the program's own run time as the kernel measures it (prog-ns/op, the
// BPF_PROG_TEST_RUN duration), without the syscall around it: whether the
// size of the service map costs anything per packet (issue 2's budget).
//
//	go test -run '^$' -bench NewFlowByServices ./internal/datapath/tclb_test
func BenchmarkNewFlowByServices(b *testing.B) {
	for _, n := range []int{1, 1000, 10000, 20000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			e := newEnv(b)
			vips := make([]netip.AddrPort, n)
			for i := range n {
				vips[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), 80)
				e.setService(vips[i], tcp, uint32(i+1),
					backend{id: uint32(2*i + 1), addr: be1.addr}, backend{id: uint32(2*i + 2), addr: be2.addr})
			}
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			var total time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// A source no earlier iteration used: always a new flow.
				src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 24), byte(i >> 16)}), uint16(i))
				frame := pkttest.TCPFrame(pkttest.Flow{Src: src, Dst: vips[rng.IntN(n)]}, syn, nil)
				ret, d, err := e.prog.Benchmark(frame, 1, nil)
				if err != nil {
					b.Fatal(err)
				}
				if e.pass(ret) != actOK {
					b.Fatalf("verdict %d", ret)
				}
				total += d
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "prog-ns/op")
		})
	}
}

// BenchmarkTupleClash times fp_tc_lb on a SYN whose translated tuple
// clashes with a live flow: client:p -> VIP-a is followed by client:p ->
// VIP-b, both served by the one backend, so the second needs a source
// port of its own (fp_ct_clash, the SNAT port search). prog-ns/op is the
// second SYN's run time; first-ns/op the first's, a plain new flow. Every
// connection of a benchmark whose Services share backends takes this path
// once the backend's tuples are in TIME_WAIT.
func BenchmarkTupleClash(b *testing.B) {
	e := newEnv(b)
	// The agent's default --snat-ports.
	cfg := lbmap.Config{SnatPortMin: datapath.DefaultSNATPorts[0], SnatPortMax: datapath.DefaultSNATPorts[1]}
	if err := e.config.Update(uint32(0), &cfg, 0); err != nil {
		b.Fatal(err)
	}
	const n = 1000
	vips := make([]netip.AddrPort, n)
	for i := range n {
		vips[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), 80)
		e.setService(vips[i], tcp, uint32(i+1), backend{id: uint32(i + 1), addr: be1.addr})
	}
	var first, second time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A client address of its own each time: the clash ports
		// (--snat-ports) are per client address, and would run out.
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(1 + i>>16), byte(i >> 8), byte(i)}), 40000)
		for k, d := range []*time.Duration{&first, &second} {
			frame := pkttest.TCPFrame(pkttest.Flow{Src: src, Dst: vips[(2*i+k)%n]}, syn, nil)
			ret, took, err := e.prog.Benchmark(frame, 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			if e.pass(ret) != actOK {
				b.Fatalf("verdict %d", ret)
			}
			*d += took
		}
	}
	b.ReportMetric(float64(first.Nanoseconds())/float64(b.N), "first-ns/op")
	b.ReportMetric(float64(second.Nanoseconds())/float64(b.N), "prog-ns/op")
}
