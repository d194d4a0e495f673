package cni

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/ipam"
	"github.com/fastpath-net/fastpath/internal/podnet"
)

// killAgent ends the agent with SIGKILL: nothing gets written on the way out.
func (n *node) killAgent() {
	n.t.Helper()
	_ = n.agent.Process.Signal(syscall.SIGKILL)
	_ = n.agent.Wait()
	n.agent = nil
}

// endpoints runs `fastpathctl endpoint list -o json` against the node.
func (n *node) endpoints(t *testing.T) []endpoint.Endpoint {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "fastpathctl"), "-o", "json",
		"--cni-state-dir", n.stateDir(), "endpoint", "list").Output()
	if err != nil {
		t.Fatalf("fastpathctl endpoint list: %v", err)
	}
	var eps []endpoint.Endpoint
	if err := json.Unmarshal(out, &eps); err != nil {
		t.Fatalf("fastpathctl endpoint list -o json: %v\n%s", err, out)
	}
	return eps
}

// TestIPAMSurvivesRestart: an address leased before the agent is killed is
// not handed out again after it restarts, and the endpoint records (with
// their IDs) survive too.
func TestIPAMSurvivesRestart(t *testing.T) {
	n := newNode(t, "10.244.12.0/30") // .1 and .2
	n.startAgent()
	a, b, c := n.newPod("a"), n.newPod("b"), n.newPod("c")
	ra, rb, rc := rt(a, "c-"+n.id+"-a"), rt(b, "c-"+n.id+"-b"), rt(c, "c-"+n.id+"-c")
	ipA := resultIP(t, n.mustAdd(ra))
	n.killAgent()
	n.startAgent()
	ipB := resultIP(t, n.mustAdd(rb))
	if ipA == ipB {
		t.Fatalf("address %s handed out twice across an agent restart", ipA)
	}
	_, err := n.add(rc)
	wantCode(t, err, 102, "no free pod address")
	eps := n.endpoints(t)
	if len(eps) != 2 || eps[0].ContainerID != ra.ContainerID || eps[1].ContainerID != rb.ContainerID || eps[0].ID == eps[1].ID {
		t.Fatalf("endpoints after restart: %+v", eps)
	}
	if eps[0].IPs[0] != ipA || eps[0].Pod.Name != a.Name || eps[0].Interface == "" || eps[0].NetNS != a.Path() {
		t.Fatalf("endpoint of a: %+v", eps[0])
	}
	if err := n.check(ra); err != nil {
		t.Fatalf("CHECK of a pod attached before the restart: %v", err)
	}
	for _, r := range []string{ra.ContainerID, rb.ContainerID} {
		if err := n.del(rt(a, r)); err != nil {
			t.Fatal(err)
		}
	}
	n.assertClean()
}

// TestGCRemovesLeaked: GC with the runtime's valid list removes the
// attachments it does not name, a lease an interrupted ADD left (no
// record), and an orphan host veth, and keeps the valid one working.
func TestGCRemovesLeaked(t *testing.T) {
	n := newNode(t, "10.244.13.0/24")
	n.startAgent()
	a, b := n.newPod("a"), n.newPod("b")
	ra, rb := rt(a, "c-"+n.id+"-a"), rt(b, "c-"+n.id+"-b")
	n.mustAdd(ra)
	n.mustAdd(rb)
	n.stopAgent()
	// What a crash in the middle of an ADD leaves: a lease without a
	// record, and a host veth without either.
	ghost := ipam.Lease{Addr: mustAddr("10.244.13.77"), Owner: ipam.Owner{Network: "fastpath", ContainerID: "c-ghost", IfName: "eth0"}, Since: time.Now()}
	data, _ := json.Marshal(ghost)
	if err := os.WriteFile(filepath.Join(n.stateDir(), "ipam", "10.244.13.77"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	orphan := podnet.HostIface("fastpath/c-ghost/eth0")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: orphan}, PeerName: "fp-ghost-peer"}
	if err := n.ns.Netlink().LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	n.startAgent()
	if len(n.leftovers()) != 2*3+2 { // per pod veth, lease, record; the ghost lease and veth
		t.Fatalf("before GC: %v", n.leftovers())
	}
	if err := n.gc(ra); err != nil {
		t.Fatalf("GC: %v", err)
	}
	left := n.leftovers()
	if len(left) != 3 {
		t.Fatalf("after GC keeping only a: %v", left)
	}
	if eps := n.endpoints(t); len(eps) != 1 || eps[0].ContainerID != ra.ContainerID {
		t.Fatalf("endpoints after GC: %+v", eps)
	}
	if err := n.check(ra); err != nil {
		t.Fatalf("CHECK of the valid attachment after GC: %v", err)
	}
	if err := n.del(ra); err != nil {
		t.Fatal(err)
	}
	n.assertClean()
}
