package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

const probeTimeout = 3 * time.Second

type check struct {
	name   string
	detail string
	err    error
}

// Report checks what works in the running lab and prints a table and the
// commands to explore it. It fails if any check fails.
func Report(bin string, st *State, out io.Writer) error {
	client, err := nettopo.OpenNS(Base + "-client")
	if err != nil {
		return err
	}
	defer client.Release()
	waitProgrammed(client)
	checks := []check{
		checkTCP(client),
		checkHTTP(client),
		checkUDP(client),
		checkRefused(client),
		checkSocketLB(bin),
	}
	failed := 0
	fmt.Fprintf(out, "\nfastpath lab: 1 node, client, backends %s\n\n", strings.Join(Backends, ", "))
	for _, c := range checks {
		verdict := "ok  "
		detail := c.detail
		if c.err != nil {
			verdict, detail = "FAIL", c.err.Error()
			failed++
		}
		fmt.Fprintf(out, "  %s  %-52s %s\n", verdict, c.name, detail)
	}
	fmt.Fprintf(out, "\nExplore:\n")
	fmt.Fprintf(out, "  %s --bpffs-dir %s service list\n", filepath.Join(bin, "fastpathctl"), PinDir)
	fmt.Fprintf(out, "  %s --bpffs-dir %s ct list\n", filepath.Join(bin, "fastpathctl"), PinDir)
	fmt.Fprintf(out, "  %s --bpffs-dir %s status\n", filepath.Join(bin, "fastpathctl"), PinDir)
	fmt.Fprintf(out, "  ip netns exec %s-client curl -s http://%s/\n", Base, VIP)
	fmt.Fprintf(out, "  edit %s/services.yaml (the agent applies changes within a second)\n", StateDir)
	fmt.Fprintf(out, "  logs: %s/*.log        tear down: make lab-down\n", StateDir)
	if failed > 0 {
		return fmt.Errorf("%d of %d lab checks failed", failed, len(checks))
	}
	return nil
}

// waitProgrammed gives a freshly started agent a few seconds to program
// the demo services before the checks run.
func waitProgrammed(client *nettopo.NS) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := nettopo.AskTCP(client, VIP+":7", 500*time.Millisecond); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func checkTCP(client *nettopo.NS) check {
	c := check{name: "client -> ClusterIP " + VIP + ":7/TCP, 30 connections"}
	seen := map[string]int{}
	for i := 0; i < 30; i++ {
		name, err := nettopo.AskTCP(client, VIP+":7", probeTimeout)
		if err != nil {
			c.err = err
			return c
		}
		seen[name]++
	}
	if len(seen) != len(Backends) {
		c.err = fmt.Errorf("reached %v, want all of %v", seen, Backends)
		return c
	}
	c.detail = "spread " + spread(seen)
	return c
}

func checkHTTP(client *nettopo.NS) check {
	c := check{name: "client -> http://" + VIP + "/ (HTTP)"}
	hc := &http.Client{Timeout: probeTimeout, Transport: nsTransport(client)}
	resp, err := hc.Get("http://" + VIP + "/")
	if err != nil {
		c.err = err
		return c
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		c.err = err
	case resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "hello from"):
		c.err = fmt.Errorf("answer %d %q, want 200 from a web backend", resp.StatusCode, body)
	default:
		c.detail = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return c
}

// nsTransport dials from inside ns. http.Transport dials on goroutines of
// its own, so wrapping Client.Get in ns.Do would dial from the root
// namespace; the dialer itself must enter the namespace. No proxy either:
// the VIP only exists in the lab.
func nsTransport(ns *nettopo.NS) *http.Transport {
	return &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = ns.Do(func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}
}

func checkUDP(client *nettopo.NS) check {
	c := check{name: "client -> " + VIP + ":53/UDP, reply from the VIP"}
	name, from, err := nettopo.AskUDP(client, VIP+":53", probeTimeout)
	switch {
	case err != nil:
		c.err = err
	case from != VIP+":53":
		c.err = fmt.Errorf("reply came from %s, not the VIP", from)
	default:
		c.detail = "answered by " + name
	}
	return c
}

func checkRefused(client *nettopo.NS) check {
	c := check{name: "client -> " + EmptyVIP + ":80 (no backends) is refused"}
	err := client.Do(func() error {
		conn, err := net.DialTimeout("tcp", EmptyVIP+":80", probeTimeout)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if errors.Is(err, syscall.ECONNREFUSED) {
		c.detail = "connection refused, as kube-proxy's REJECT"
	} else {
		c.err = fmt.Errorf("got %v, want connection refused", err)
	}
	return c
}

// checkSocketLB runs a probe process inside the node's cgroup and netns:
// connect() is translated by the socket LB, and getpeername shows the VIP.
func checkSocketLB(bin string) check {
	c := check{name: "process on the node -> " + VIP + ":7 via socket LB"}
	cg, err := os.Open(CgroupDir)
	if err != nil {
		c.err = err
		return c
	}
	defer cg.Close()
	cmd := exec.Command(filepath.Join(bin, "fastpath-lab"), "probe", "--netns", "/run/netns/"+Base+"-node", "--addr", VIP+":7")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.err = fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
		return c
	}
	backend, peer, _ := strings.Cut(strings.TrimSpace(stdout.String()), " ")
	if peer != VIP+":7" {
		c.err = fmt.Errorf("peer is %q, want the VIP", peer)
		return c
	}
	c.detail = "answered by " + backend + ", peer " + peer
	return c
}

func spread(seen map[string]int) string {
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, seen[n])
	}
	return strings.Join(parts, " ")
}
