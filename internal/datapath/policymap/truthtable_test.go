package policymap_test

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
)

// TestTruthTable runs every golden case of internal/policy through the
// real BPF program: after each step, the Engine's entries and ipcache are
// written into fresh maps, and every probe of the reachability matrix is
// a packet judged by the egress instance (as the source endpoint) and then
// the ingress instance (as the destination endpoint). The result must be
// the oracle's, so the kernel, the Engine and `policy trace` agree.
func TestTruthTable(t *testing.T) {
	files, err := filepath.Glob("../../policy/testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	base, err := policytest.BaseYAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		ar, err := txtar.ParseFile(file)
		if err != nil {
			t.Fatal(err)
		}
		comment := string(ar.Comment)
		if strings.Contains(comment, "no-oracle") {
			continue
		}
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			eng := policy.NewEngine(identity.NewMemory(identity.MinCluster).Identity, "")
			w := policytest.NewWorld()
			if strings.Contains(comment, "base") {
				must(t, w.Apply(eng, base))
			}
			for i, f := range ar.Files {
				switch f.Name {
				case "apply":
					must(t, w.Apply(eng, f.Data))
				case "delete":
					must(t, w.Delete(eng, f.Data))
				case "want":
					eng.Changes()
					checkKernel(t, eng, w, i)
				}
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func checkKernel(t *testing.T, eng *policy.Engine, w *policytest.World, step int) {
	t.Helper()
	p := newPE(t)
	for prefix, id := range eng.IPCache() {
		if err := p.ipcache.Put(policymap.IPCacheKeyOf(prefix), policymap.IPCacheValue{Identity: uint32(id)}); err != nil {
			t.Fatal(err)
		}
	}
	var rules policymap.Rules
	eps := map[string]policymap.Endpoint{}
	addrs := map[string]policy.PodName{}
	for i, name := range w.PodNames() {
		pn, _ := policy.ParsePodName(name)
		ep, ok := eng.Endpoint(pn)
		if !ok {
			t.Fatalf("no endpoint %s", name)
		}
		id := uint16(i + 1)
		eps[name] = policymap.EndpointValue(id, netip.Addr{}, ep)
		addrs[name] = pn
		for k, v := range policymap.Keys(id, ep, &rules) {
			if err := p.pol.Put(k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	bad := 0
	for n, pr := range w.Matrix() {
		src, _ := podAddr(eng, addrs[pr.From])
		dst, _ := podAddr(eng, addrs[pr.To])
		sport := uint16(10000 + n) // a flow of its own: no ct entry helps it
		var frame []byte
		switch pr.Proto {
		case policy.TCP:
			frame = tcp(src, dst, sport, pr.Port, pkttest.SYN)
		case policy.UDP:
			frame = udp(src, dst, sport, pr.Port)
		case policy.SCTP:
			frame = sctp(src, dst, sport, pr.Port)
		}
		if err := p.eps.Put(uint32(loIfindex), eps[pr.From]); err != nil {
			t.Fatal(err)
		}
		allowed := p.run(p.egress, frame) == tcxNext
		if allowed {
			if err := p.eps.Put(uint32(loIfindex), eps[pr.To]); err != nil {
				t.Fatal(err)
			}
			allowed = p.run(p.ingress, frame) == tcxNext
		}
		if want := w.Oracle(pr); allowed != want && bad < 10 {
			bad++
			t.Errorf("step %d: %s -> %s %s/%d: kernel allowed=%v, oracle %v", step, pr.From, pr.To, pr.Proto, pr.Port, allowed, want)
		}
		if !allowed {
			checkDropRecord(t, p, eng, pr, addrs, eps)
		}
	}
}

// checkDropRecord reads the drop's verdict record and checks that it names
// the endpoint, identities and port the Engine has, and that the Engine
// explains it by the policies enforcing that direction.
func checkDropRecord(t *testing.T, p *pe, eng *policy.Engine, pr policytest.Probe, addrs map[string]policy.PodName, eps map[string]policymap.Endpoint) {
	t.Helper()
	v := p.next()
	from, to := addrs[pr.From], addrs[pr.To]
	fromID, _, _ := eng.PodIdentity(from)
	toID, _, _ := eng.PodIdentity(to)
	pod, want := from, eps[pr.From]
	if v.Dir == policymap.DirIngress {
		pod, want = to, eps[pr.To]
	}
	if v.Verdict != policymap.VerdictDrop || v.Endpoint != want.ID || v.SrcIdentity != uint32(fromID) ||
		v.DstIdentity != uint32(toID) || v.Dport != pr.Port || v.Proto != uint8(pr.Proto) {
		t.Fatalf("%v: record %+v, want endpoint %d identities %d -> %d", pr, v, want.ID, fromID, toID)
	}
	ep, _ := eng.Endpoint(pod)
	why := eng.Explain(pod, policy.Direction(v.Dir), v.Peer(), policy.Proto(v.Proto), v.Dport)
	if !strings.Contains(why, "denied: enforced by "+strings.Join(ep.Selecting[v.Dir], ", ")) || !strings.Contains(why, "no rule allows identity "+v.Peer().String()+" (") {
		t.Fatalf("%v: explanation %q", pr, why)
	}
}
