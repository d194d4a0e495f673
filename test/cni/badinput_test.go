package cni

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// execPlugin runs fastpath-cni once from the node's namespace, as a runtime
// does, and returns its CNI error (nil on success).
func (n *node) execPlugin(t *testing.T, command, containerID, netns string, stdin []byte) *types.Error {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "fastpath-cni"))
	cmd.Env = []string{
		"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0", "CNI_PATH=" + bin,
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := n.inNode(cmd.Run)
	if err == nil {
		return nil
	}
	e := &types.Error{}
	if jerr := json.Unmarshal(stdout.Bytes(), e); jerr != nil {
		t.Fatalf("plugin failed (%v) without a CNI error on stdout: %q, stderr %q", err, stdout.String(), stderr.String())
	}
	return e
}

// pluginConf is the fastpath-cni entry of the installed conflist, as a
// runtime hands it to the plugin, with changes applied.
func (n *node) pluginConf(t *testing.T, change func(map[string]any)) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.confDir(), "10-fastpath.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	conf := list.Plugins[0]
	conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
	if change != nil {
		change(conf)
	}
	out, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBadInput gives the plugin each kind of bad input the spec names and
// checks the error code, that the message names the problem, and that
// nothing is left behind.
func TestBadInput(t *testing.T) {
	n := newNode(t, "10.244.9.0/30") // two usable addresses: .1 and .2
	n.startAgent()
	pod := n.newPod("pod")
	cid := "c-" + n.id + "-bad"

	t.Run("malformed stdin", func(t *testing.T) {
		e := n.execPlugin(t, "ADD", cid, pod.Path(), []byte(`{"cniVersion": "1.1.0", "name": `))
		wantTypesCode(t, e, types.ErrDecodingFailure, "unmarshal")
		n.assertClean()
	})
	t.Run("malformed config field", func(t *testing.T) {
		e := n.execPlugin(t, "ADD", cid, pod.Path(), n.pluginConf(t, func(c map[string]any) { c["mtu"] = 70000 }))
		wantTypesCode(t, e, types.ErrInvalidNetworkConfig, "mtu 70000")
		e = n.execPlugin(t, "ADD", cid, pod.Path(), n.pluginConf(t, func(c map[string]any) { c["mtu"] = "big" }))
		wantTypesCode(t, e, types.ErrDecodingFailure, "mtu")
		e = n.execPlugin(t, "ADD", cid, pod.Path(), n.pluginConf(t, func(c map[string]any) { c["ipam"] = map[string]any{"type": "host-local"} }))
		wantTypesCode(t, e, types.ErrUnsupportedField, "ipam")
		n.assertClean()
	})
	t.Run("unknown CNI version", func(t *testing.T) {
		e := n.execPlugin(t, "ADD", cid, pod.Path(), n.pluginConf(t, func(c map[string]any) { c["cniVersion"] = "9.9.9" }))
		wantTypesCode(t, e, types.ErrIncompatibleCNIVersion, "incompatible CNI versions")
		if !strings.Contains(e.Details, "9.9.9") {
			t.Fatalf("details %q do not name the version", e.Details)
		}
		n.assertClean()
	})
	t.Run("missing netns", func(t *testing.T) {
		gone := "/run/netns/fp-cni-" + n.id + "-gone"
		_, err := n.add(withNetNS(rt(pod, cid), gone))
		wantCode(t, err, 3, gone)
		n.assertClean()
		e := n.execPlugin(t, "ADD", cid, "", n.pluginConf(t, nil))
		wantTypesCode(t, e, types.ErrInvalidEnvironmentVariables, "CNI_NETNS")
	})
	t.Run("netns of the node itself", func(t *testing.T) {
		e := n.execPlugin(t, "ADD", cid, n.ns.Path(), n.pluginConf(t, nil))
		wantTypesCode(t, e, types.ErrInvalidNetNS, "not a pod's")
		n.assertClean()
	})
	t.Run("duplicate ADD", func(t *testing.T) {
		r := rt(pod, cid)
		first := n.mustAdd(r)
		_, err := n.add(r)
		wantCode(t, err, 101, "already has interface eth0")
		if err := n.check(r); err != nil {
			t.Fatalf("the first attachment was damaged by the duplicate ADD: CHECK: %v", err)
		}
		if got := resultIP(t, first); len(n.leftovers()) != 3 { // veth, lease, record (clsact: no tc pin)
			t.Fatalf("after a duplicate ADD of %s: %v", got, n.leftovers())
		}
		if err := n.del(r); err != nil {
			t.Fatal(err)
		}
		n.assertClean()
	})
	t.Run("DEL of an unknown container", func(t *testing.T) {
		if err := n.del(rt(pod, "c-"+n.id+"-never-added")); err != nil {
			t.Fatalf("DEL of an unknown container: %v", err)
		}
		r := rt(pod, cid)
		n.mustAdd(r)
		for i := range 2 {
			if err := n.del(r); err != nil {
				t.Fatalf("DEL #%d: %v", i+1, err)
			}
		}
		n.assertClean()
	})
	t.Run("IPAM exhaustion", func(t *testing.T) {
		a, b, c := n.newPod("a"), n.newPod("b"), n.newPod("c")
		ra, rb, rc := rt(a, cid+"-a"), rt(b, cid+"-b"), rt(c, cid+"-c")
		n.mustAdd(ra)
		n.mustAdd(rb)
		_, err := n.add(rc)
		wantCode(t, err, 102, "no free pod address")
		if !strings.Contains(err.Error(), "10.244.9.0/30") {
			t.Fatalf("error %q does not name the range", err)
		}
		if left := n.leftovers(); len(left) != 6 {
			t.Fatalf("the failed ADD left something (want only a's and b's veth, lease and record): %v", left)
		}
		if err := n.del(rc); err != nil {
			t.Fatal(err)
		}
		if err := n.del(ra); err != nil {
			t.Fatal(err)
		}
		n.mustAdd(rc) // a's address is free again
		for _, r := range []*libcni.RuntimeConf{rb, rc} {
			if err := n.del(r); err != nil {
				t.Fatal(err)
			}
		}
		n.assertClean()
	})
	t.Run("DEL after the netns is gone", func(t *testing.T) {
		p := n.newPod("short")
		r := rt(p, cid+"-short")
		n.mustAdd(r)
		if err := p.Delete(); err != nil {
			t.Fatal(err)
		}
		n.pods = n.pods[:len(n.pods)-1]
		if err := n.del(r); err != nil {
			t.Fatalf("DEL with the netns gone: %v", err)
		}
		n.assertClean()
	})
}

func wantTypesCode(t *testing.T, e *types.Error, code uint, msgPart string) {
	t.Helper()
	if e == nil {
		t.Fatalf("got success, want CNI error %d", code)
	}
	wantCode(t, e, int(code), msgPart)
}

// TestAgentDown: without an agent (stopped, or killed with its socket file
// left behind), ADD asks the runtime to try again and STATUS reports the
// plugin not available; both name the socket.
func TestAgentDown(t *testing.T) {
	n := newNode(t, "10.244.10.0/24")
	n.startAgent()
	n.stopAgent()
	pod := n.newPod("pod")
	_, err := n.add(rt(pod, "c-"+n.id+"-down"))
	wantCode(t, err, 11, "fastpath agent is not running")
	if !strings.Contains(err.Error(), n.socket()) {
		t.Fatalf("error %q does not name the socket", err)
	}
	wantCode(t, n.status(), 50, "fastpath agent is not running")
	n.assertClean()
	n.startAgent()
	if err := n.status(); err != nil {
		t.Fatalf("STATUS after the agent came back: %v", err)
	}
	// Killed, the agent leaves its socket file behind: nobody answers.
	n.killAgent()
	_, err = n.add(rt(pod, "c-"+n.id+"-down"))
	wantCode(t, err, 11, "fastpath agent is not running")
	wantCode(t, n.status(), 50, "fastpath agent is not running")
	n.assertClean()
}
