package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/l7redirect"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
)

// The server pod's ports: l4Port is allowed at L4 only, l7Port by an entry
// with HTTP rules, which tc_policy sends to the proxy on proxyPort.
const (
	l4Port    = 8080
	l7Port    = 8081
	proxyPort = 15001
)

const (
	clientID, serverID identity.ID = 2000, 1000
	clientEP, serverEP uint16      = 2, 1
)

// topo is the node of the real path: a client and a server pod (fp-
// namespaces) on one node namespace, the datapath loaded and attached to
// both pod veths as the agent does (tc_lb, then tc_policy, L7 redirect
// on), the server's ingress enforced: l4Port allowed from the client,
// l7Port allowed through the proxy. One thread per namespace starts the
// processes that live there.
type topo struct {
	star       *nettopo.Star
	dp         *datapath.Datapath
	pinDir     string
	cli, srv   *nettopo.Host
	node       *nsproc.Thread // the proxy runs here, as in the agent
	cliT, srvT *nsproc.Thread
}

func newTopo() (t *topo, err error) {
	t = &topo{}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	if t.star, err = nettopo.NewStar("l7b", "srv", "cli"); err != nil {
		return nil, err
	}
	t.srv, t.cli = t.star.Host("srv"), t.star.Host("cli")
	if t.pinDir, err = os.MkdirTemp("/sys/fs/bpf", "fp-bench-l7-"); err != nil {
		return nil, fmt.Errorf("pin dir on bpffs: %w", err)
	}
	small := datapath.Sizes{Services: 64, Backends: 64, RevNat: 64, CT: 16384, SockRevNat: 64, Affinity: 64, SourceRanges: 64}
	if t.dp, err = datapath.Load(datapath.Config{PinDir: t.pinDir, TC: datapath.TCX, Policy: true, L7: true, Sizes: small}); err != nil {
		return nil, err
	}
	m := t.dp.Policy().Maps()
	for _, h := range []*nettopo.Host{t.srv, t.cli} {
		ifc := datapath.Iface{NetNS: t.star.Node.Path(), Name: h.NodeIf}
		mode, err := t.dp.AttachTC(ifc)
		if err != nil {
			return nil, err
		}
		if err := t.dp.AttachPolicy(ifc, mode); err != nil {
			return nil, err
		}
	}
	if err := m.IPCache.Update(
		[]policymap.IPCacheKey{policymap.IPCacheKeyOf(netip.MustParsePrefix("0.0.0.0/0")),
			policymap.IPCacheKeyOf(netip.PrefixFrom(t.srv.Addr, 32)), policymap.IPCacheKeyOf(netip.PrefixFrom(t.cli.Addr, 32))},
		[]policymap.IPCacheValue{{Identity: uint32(identity.WorldIPv4)}, {Identity: uint32(serverID)}, {Identity: uint32(clientID)}},
	); err != nil {
		return nil, err
	}
	// The server's ingress as the agent computes and writes it
	// (policymap.Keys): both ports allowed from the client, l7Port with
	// HTTP rules (the proxy judges them; the datapath only needs to know
	// there are some).
	ref := policy.RuleRef{Policy: "fnp:fp-bench/server", Path: "spec.ingress[0]"}
	k4 := policy.Key{Identity: clientID, Dir: policy.Ingress, Proto: policy.TCP, Port: l4Port, EndPort: l4Port}
	k7 := policy.Key{Identity: clientID, Dir: policy.Ingress, Proto: policy.TCP, Port: l7Port, EndPort: l7Port}
	ep := &policy.EndpointPolicy{Identity: serverID, Enforced: [2]bool{policy.Ingress: true},
		Entries: map[policy.Key][]policy.RuleRef{k4: {ref}, k7: {ref}}, L7: map[policy.Key]*policy.L7{k7: {}}}
	var keys []policymap.PolicyKey
	var vals []policymap.PolicyValue
	for k, v := range policymap.Keys(serverEP, ep, &policymap.Rules{ProxyPort: proxyPort}) {
		keys, vals = append(keys, k), append(vals, v)
	}
	if err := m.Policy.Update(keys, vals); err != nil {
		return nil, err
	}
	for _, e := range []struct {
		h   *nettopo.Host
		id  uint16
		pol *policy.EndpointPolicy
	}{{t.srv, serverEP, ep}, {t.cli, clientEP, &policy.EndpointPolicy{Identity: clientID}}} {
		idx, err := t.star.Node.Ifindex(e.h.NodeIf)
		if err != nil {
			return nil, err
		}
		if err := m.Endpoints.Update([]uint32{uint32(idx)}, []policymap.Endpoint{policymap.EndpointValue(e.id, e.h.Addr, e.pol)}); err != nil {
			return nil, err
		}
	}
	if err := l7redirect.EnsureRoute(t.star.Node.Path()); err != nil {
		return nil, err
	}
	if t.node, err = nsproc.NewThread(t.star.Node); err != nil {
		return nil, err
	}
	if t.srvT, err = nsproc.NewThread(t.srv.NS); err != nil {
		return nil, err
	}
	if t.cliT, err = nsproc.NewThread(t.cli.NS); err != nil {
		return nil, err
	}
	return t, nil
}

// target is where the client dials for path "L4" or "L7".
func (t *topo) target(path string) string {
	port := uint16(l4Port)
	if path == "L7" {
		port = l7Port
	}
	return netip.AddrPortFrom(t.srv.Addr, port).String()
}

// checkPaths makes sure that the two paths are what they are called: a
// request the rules deny gets the proxy's 403 on the L7 port and the
// upstream's 200 on the L4 port, from the client's namespace.
func (t *topo) checkPaths(ctx context.Context) error {
	for _, c := range []struct{ path, want string }{{pathL4, "HTTP/1.1 200 "}, {pathL7, "HTTP/1.1 403 "}} {
		if err := t.ask(ctx, c.path, c.want); err != nil {
			return fmt.Errorf("%s path: %w", c.path, err)
		}
	}
	return nil
}

func (t *topo) ask(ctx context.Context, path, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := t.cli.NS.DialContext(ctx, "tcp4", t.target(path))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, deniedRequest); err != nil {
		return err
	}
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(status, want) {
		return fmt.Errorf("%s answered %q to a request the rules deny, want %q", t.target(path), status, want)
	}
	return nil
}

// close ends the threads (their children get SIGKILL if still there),
// removes the namespaces (and with them the attachments) and the pins.
func (t *topo) close() error {
	for _, th := range []*nsproc.Thread{t.node, t.srvT, t.cliT} {
		if th != nil {
			th.Close()
		}
	}
	var errs []error
	if t.dp != nil {
		errs = append(errs, t.dp.Close())
	}
	if t.star != nil {
		errs = append(errs, t.star.Close())
	}
	if t.pinDir != "" {
		errs = append(errs, datapath.Uninstall(t.pinDir))
	}
	return errors.Join(errs...)
}
