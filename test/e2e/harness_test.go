package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testpriv"
	"github.com/fastpath-net/fastpath/test/internal/syncbuf"
)

const (
	vip     = "10.96.0.10"
	timeout = 3 * time.Second
)

// lab is one node with a client and backends, the agent running on the node.
type lab struct {
	t        *testing.T
	star     *nettopo.Star
	pinDir   string
	file     string
	agent    *exec.Cmd
	agentLog *syncbuf.Buffer
	servers  map[string]*nettopo.Whoami
	extra    []string // extra agent flags
	agentBin string   // the agent binary; "": the one TestMain built
	// kube, when set, makes the agent take its services from Kubernetes
	// instead of the services file.
	kube *kubeSource
}

// kubeSource is the apiserver and node identity an agent watches with.
type kubeSource struct {
	kubeconfig string
	nodeName   string
}

// newLab builds client + backends around a node, starts whoami servers on
// port 8080 of every backend, and removes everything at the end.
func newLab(t *testing.T, backends ...string) *lab {
	t.Helper()
	testpriv.Require(t)
	pin, err := os.MkdirTemp("/sys/fs/bpf", "fp-test-")
	if err != nil {
		testpriv.Unavailable(t, "cannot create a directory on bpffs /sys/fs/bpf: "+err.Error())
	}
	l := &lab{t: t, pinDir: pin, servers: map[string]*nettopo.Whoami{}, file: filepath.Join(t.TempDir(), "services.yaml")}
	t.Cleanup(l.close)
	l.star, err = nettopo.NewStar("e2e", append([]string{"client"}, backends...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range backends {
		h := l.star.Host(b)
		w, err := nettopo.StartWhoami(h.NS, b, h.Addr.String()+":8080")
		if err != nil {
			t.Fatal(err)
		}
		l.servers[b] = w
	}
	return l
}

func (l *lab) close() {
	l.stopAgent()
	for _, w := range l.servers {
		w.Close()
	}
	if l.star != nil {
		ifaces := l.star.NodeInterfaces()
		for _, ifc := range ifaces {
			_ = datapath.DetachTC(l.pinDir, datapath.Iface{NetNS: l.star.Node.Path(), Name: ifc})
		}
		if err := l.star.Close(); err != nil {
			l.t.Errorf("remove namespaces: %v", err)
		}
	}
	if err := datapath.Uninstall(l.pinDir); err != nil {
		l.t.Errorf("remove pins: %v", err)
	}
	if l.t.Failed() && l.agentLog != nil {
		l.t.Logf("agent log:\n%s", l.agentLog.String())
	}
}

func (l *lab) client() *nettopo.NS { return l.star.Host("client").NS }

// backendAddr is the address a backend's whoami listens on.
func (l *lab) backendAddr(name string) string { return l.star.Host(name).Addr.String() }

// writeServices writes the services file the agent watches.
func (l *lab) writeServices(yaml string) {
	l.t.Helper()
	tmp := l.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Rename(tmp, l.file); err != nil {
		l.t.Fatal(err)
	}
}

// webService is a ClusterIP service on vip:80 (TCP and UDP) to port 8080 of
// the named backends.
func (l *lab) webService(backends ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "services:\n  - name: web\n    namespace: demo\n    clusterIP: %s\n", vip)
	b.WriteString("    ports:\n      - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n")
	b.WriteString("      - {name: dns, port: 53, protocol: UDP, targetPort: 8080}\n")
	b.WriteString("    backends:\n")
	if len(backends) == 0 {
		b.WriteString("      []\n")
	}
	for _, be := range backends {
		fmt.Fprintf(&b, "      - address: %s\n", l.backendAddr(be))
	}
	return b.String()
}

func (l *lab) startAgent() {
	l.t.Helper()
	args := append([]string{
		"--bpffs-dir", l.pinDir,
		"--netns", l.star.Node.Path(),
		"--interfaces", strings.Join(l.star.NodeInterfaces(), ","),
	}, l.sourceArgs()...)
	args = append(append(args,
		"--ct-max", "4096", "--services-max", "4096", "--backends-max", "1024",
		"--revnat-max", "1024", "--sock-revnat-max", "1024",
		"--log-level", "debug",
	), l.extra...)
	path := l.agentBin
	if path == "" {
		path = filepath.Join(bin, "fastpath-agent")
	}
	cmd := exec.Command(path, args...)
	if l.agentLog == nil {
		l.agentLog = &syncbuf.Buffer{}
	}
	cmd.Stdout, cmd.Stderr = l.agentLog, l.agentLog
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.agent = cmd
}

// sourceArgs are the flags naming the agent's source of services.
func (l *lab) sourceArgs() []string {
	if l.kube != nil {
		return []string{"--kubeconfig", l.kube.kubeconfig, "--node-name", l.kube.nodeName}
	}
	return []string{"--services-file", l.file, "--services-file-poll", "50ms"}
}

// stopAgent ends the agent with SIGTERM, as an upgrade or restart would.
func (l *lab) stopAgent() {
	if l.agent == nil {
		return
	}
	_ = l.agent.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- l.agent.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = l.agent.Process.Kill()
		<-done
		l.t.Errorf("agent did not stop within 10s of SIGTERM")
	}
	l.agent = nil
}

// waitBackends waits until the pinned maps show frontend with exactly the
// backends (by address:port), and fails the test after 10 seconds.
func (l *lab) waitBackends(frontend string, want ...string) {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		got, err := l.backendsOf(frontend)
		if err == nil && sameSet(got, want) {
			return
		}
		last = fmt.Sprintf("%v (err %v)", got, err)
		time.Sleep(20 * time.Millisecond)
	}
	l.t.Fatalf("frontend %s: backends %s, want %v\nagent log:\n%s", frontend, last, want, l.agentLog)
}

func (l *lab) backendsOf(frontend string) ([]string, error) {
	p, err := ctl.Open(l.pinDir)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	rows, err := ctl.Services(p.LB)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r.Frontend == frontend {
			out := []string{}
			for _, b := range r.Backends {
				out = append(out, b.Address)
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("frontend %s not programmed", frontend)
}

// ctl runs fastpathctl against the lab's pins and decodes its JSON output.
func (l *lab) ctl(v any, args ...string) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Port 1 of the root namespace: the agent serves inside the node, and
	// nothing another test runs on 127.0.0.1:10249 here may answer.
	full := append([]string{"--bpffs-dir", l.pinDir, "--agent-url", "http://127.0.0.1:1", "-o", "json"}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "fastpathctl"), full...).Output()
	if err != nil {
		l.t.Fatalf("fastpathctl %v: %v", args, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		l.t.Fatalf("fastpathctl %v: bad json: %v\n%s", args, err, out)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}
