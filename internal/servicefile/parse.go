// Package servicefile is the standalone source of services: a YAML or JSON
// file, for an agent without Kubernetes, parsed strictly into
// loadbalancer.Service values and watched for changes.
//
//	services:
//	  - name: web
//	    namespace: demo                # default "default"
//	    clusterIP: 10.96.0.10          # the VIP
//	    externalIPs: [192.0.2.10]      # more frontends on the same ports
//	    ports:
//	      - name: http                 # required when there are several
//	        port: 80
//	        protocol: TCP              # TCP (default) | UDP | SCTP
//	        targetPort: 8080           # number, or a name looked up in backend.ports; default: port
//	    sessionAffinity: None          # None (default) | ClientIP
//	    sessionAffinityTimeoutSeconds: 10800   # ClientIP only, 1-86400, default 10800
//	    backends:
//	      - address: 10.0.1.2
//	        ports: {http: 8080}        # for named targetPorts
//	        state: active              # active (default) | terminating
//
// A file is all or nothing: with any problem, Parse returns an *Error listing
// every problem and no services, and the caller keeps its previous state.
package servicefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"time"

	goyaml "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// MaxFileSize is the largest file Parse accepts.
const MaxFileSize = 16 << 20

// Kubernetes' bounds and default for ClientIP affinity.
const (
	defaultAffinitySeconds = 10800
	maxAffinitySeconds     = 86400
)

// Parse decodes and checks a services file. Unknown fields, duplicate keys
// and wrong types are errors, as are duplicate service names and two
// services using one VIP, port and protocol. An empty file is an error too:
// a half-written file must not read as "no services"; write `services: []`.
//
// A file of the usual shape (a `services:` block list, or JSON) is read one
// service at a time, so the memory it takes grows with the services kept,
// not with copies of the whole file; other files are read whole, with the
// same result.
func Parse(data []byte) ([]loadbalancer.Service, error) {
	if len(data) > MaxFileSize {
		return nil, &Error{Problems: []string{fmt.Sprintf("file is %d bytes, more than the limit of %d", len(data), MaxFileSize)}}
	}
	if svcs, ok, err := parseEntries(data); ok {
		return svcs, err
	}
	return parseWhole(data)
}

// parseWhole is Parse for any file: it converts the whole document to JSON
// and decodes that into a generic tree before checking it, so it holds
// several copies of the file at once. parseEntries gives the same answer
// one service at a time for the files it can split.
func parseWhole(data []byte) ([]loadbalancer.Service, error) {
	if err := singleDocument(data); err != nil {
		return nil, &Error{Problems: []string{err.Error()}}
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, &Error{Problems: []string{err.Error()}}
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, &Error{Problems: []string{err.Error()}}
	}
	p := &problems{}
	svcs := parseDoc(p, doc)
	if err := p.err(); err != nil {
		return nil, err
	}
	return svcs, nil
}

// singleDocument refuses a second YAML document, which the conversion to
// JSON would silently drop with every service in it.
func singleDocument(data []byte) error {
	dec := goyaml.NewDecoder(bytes.NewReader(data))
	for n := 0; ; n++ {
		var doc any
		err := dec.Decode(&doc)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && n == 0:
			return nil // the conversion reports it
		case err != nil:
			return err
		case n > 0 && doc != nil:
			return errors.New("the file holds more than one YAML document; put every service in one `services` list")
		}
	}
}

func parseDoc(p *problems, doc any) []loadbalancer.Service {
	if doc == nil {
		p.add("", "", "the file is empty; write `services: []` for no services")
		return nil
	}
	top := asObject(p, "", "", doc)
	if top == nil {
		return nil
	}
	if _, ok := top.get("services"); !ok {
		top.errorf("services", "missing; write `services: []` for no services")
	}
	items, _ := top.list("services")
	top.done()
	c := newCollector(p)
	for i, item := range items {
		c.add(i, item)
	}
	return c.out
}

// collector checks the entries of `services` one at a time, in order, and
// keeps the good ones.
type collector struct {
	p     *problems
	out   []loadbalancer.Service
	names map[loadbalancer.ServiceName]string
	vips  map[loadbalancer.L4Addr]string
}

func newCollector(p *problems) *collector {
	return &collector{p: p, names: map[loadbalancer.ServiceName]string{}, vips: map[loadbalancer.L4Addr]string{}}
}

// add checks services[i], decoded as a generic JSON value.
func (c *collector) add(i int, item any) {
	svc, at, ok := parseService(c.p, i, item)
	if !ok {
		return
	}
	if first, dup := c.names[svc.Name]; dup {
		c.p.add(at, "", "same namespace and name as %s", first)
		return
	}
	c.names[svc.Name] = at
	checkVIPs(c.p, at, svc, c.vips)
	c.out = append(c.out, svc)
}

// checkVIPs reports frontends another service of the file uses already.
func checkVIPs(p *problems, at string, svc loadbalancer.Service, vips map[loadbalancer.L4Addr]string) {
	for _, fe := range svc.Frontends {
		if first, dup := vips[fe.L4Addr]; dup {
			p.add(at, "", "frontend %s is also used by %s", fe.L4Addr, first)
			continue
		}
		vips[fe.L4Addr] = at
	}
}

// port is one entry of a service's ports.
type port struct {
	at         string // "ports[0]"
	name       string
	port       uint16
	proto      loadbalancer.Proto
	target     uint16 // 0 when targetName is set
	targetName string
}

// backend is one entry of a service's backends.
type backend struct {
	at    string
	addr  netip.Addr
	ports map[string]uint16
	state loadbalancer.BackendState
}

// parseService reads services[i]; ok is false when it has problems.
func parseService(p *problems, i int, item any) (svc loadbalancer.Service, at string, ok bool) {
	at = fmt.Sprintf("services[%d]", i)
	before := len(p.list) + p.more
	o := asObject(p, at, "", item)
	if o == nil {
		return svc, at, false
	}
	svc.Name = serviceName(o, i)
	at = o.at
	vips := parseVIPs(o)
	ports := parsePorts(o)
	affinity := parseAffinity(o)
	backends := parseBackends(o)
	o.done()
	checkFamilies(o, vips, backends)
	if len(p.list)+p.more > before {
		return svc, at, false
	}
	svc.Frontends = frontends(p, at, vips, ports, backends, affinity)
	return svc, at, len(p.list)+p.more == before
}

// serviceName reads the name and makes it part of every later error about
// services[i].
func serviceName(o *object, i int) loadbalancer.ServiceName {
	name, hasName := o.str("name")
	ns, hasNS := o.str("namespace")
	if !hasNS {
		ns = "default"
	}
	if hasName {
		o.at = fmt.Sprintf("services[%d] (%s/%s)", i, ns, name)
	}
	if !hasName {
		o.errorf("name", "missing")
	} else if msg := checkLabel(name); msg != "" {
		o.errorf("name", "%q %s", name, msg)
	}
	if msg := checkLabel(ns); hasNS && msg != "" {
		o.errorf("namespace", "%q %s", ns, msg)
	}
	return loadbalancer.ServiceName{Namespace: ns, Name: name}
}

// vip is one frontend address and the type it gives its frontends.
type vip struct {
	addr netip.Addr
	typ  loadbalancer.FrontendType
	at   string
}

func parseVIPs(o *object) []vip {
	var out []vip
	if s, ok := o.str("clusterIP"); !ok {
		o.errorf("clusterIP", "missing")
	} else if a, ok := parseIP(o, "clusterIP", s); ok {
		out = append(out, vip{addr: a, typ: loadbalancer.ClusterIP, at: "clusterIP"})
	}
	ips, _ := o.list("externalIPs")
	for j, v := range ips {
		name := fmt.Sprintf("externalIPs[%d]", j)
		s, isStr := v.(string)
		if !isStr {
			o.errorf(name, "must be a string, not %s", kindOf(v))
			continue
		}
		a, ok := parseIP(o, name, s)
		if !ok {
			continue
		}
		for _, prev := range out {
			if prev.addr == a {
				o.errorf(name, "%s is also %s", a, prev.at)
				ok = false
			}
		}
		if ok {
			out = append(out, vip{addr: a, typ: loadbalancer.ExternalIP, at: name})
		}
	}
	return out
}

// parseIP accepts an address a frontend or backend can have.
func parseIP(o *object, name, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		o.errorf(name, "%q is not an IP address", s)
	case a.Zone() != "":
		o.errorf(name, "%q has a zone", s)
	case a.IsUnspecified() || a.IsMulticast():
		o.errorf(name, "%q is not a unicast address", s)
	default:
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

func parsePorts(o *object) []port {
	items, ok := o.list("ports")
	if !ok || len(items) == 0 {
		o.errorf("ports", "at least one port is needed")
		return nil
	}
	var out []port
	for j, item := range items {
		po := asObject(o.p, o.at, fmt.Sprintf("ports[%d]", j), item)
		if po == nil {
			continue
		}
		out = append(out, parsePort(po, len(items) > 1))
		po.done()
	}
	checkPortsUnique(o, out)
	return out
}

func parsePort(o *object, many bool) port {
	pt := port{at: o.path, proto: loadbalancer.TCP}
	if name, ok := o.str("name"); ok {
		if msg := checkLabel(name); msg != "" {
			o.errorf("name", "%q %s", name, msg)
		}
		pt.name = name
	} else if many {
		o.errorf("name", "missing; every port needs a name when there are several")
	}
	if n, ok := o.int("port"); !ok {
		o.errorf("port", "missing")
	} else {
		pt.port = portNumber(o, "port", n)
	}
	if s, ok := o.str("protocol"); ok {
		pt.proto = protocol(o, s)
	}
	v, ok := o.get("targetPort")
	switch t := v.(type) {
	case nil:
		pt.target = pt.port
	case string:
		if msg := checkLabel(t); msg != "" {
			o.errorf("targetPort", "%q %s", t, msg)
		}
		pt.targetName = t
	case json.Number:
		if n, ok := o.int("targetPort"); ok {
			pt.target = portNumber(o, "targetPort", n)
		}
	default:
		if ok {
			o.errorf("targetPort", "must be a number or a port name, not %s", kindOf(v))
		}
	}
	return pt
}

func checkPortsUnique(o *object, ports []port) {
	names := map[string]string{}
	l4 := map[[2]uint16]string{}
	for _, pt := range ports {
		if pt.name != "" {
			if first, dup := names[pt.name]; dup {
				o.p.add(o.at, pt.at+".name", "%q is also the name of %s", pt.name, first)
			}
			names[pt.name] = pt.at
		}
		k := [2]uint16{pt.port, uint16(pt.proto)}
		if first, dup := l4[k]; dup && pt.port != 0 {
			o.p.add(o.at, pt.at, "port %d/%s is also %s", pt.port, pt.proto, first)
		}
		l4[k] = pt.at
	}
}

func portNumber(o *object, name string, n int64) uint16 {
	if n < 1 || n > 65535 {
		o.errorf(name, "%d is out of range 1-65535", n)
		return 0
	}
	return uint16(n)
}

func protocol(o *object, s string) loadbalancer.Proto {
	switch s {
	case "TCP":
		return loadbalancer.TCP
	case "UDP":
		return loadbalancer.UDP
	case "SCTP":
		return loadbalancer.SCTP
	}
	o.errorf("protocol", "%q is not TCP, UDP or SCTP", s)
	return loadbalancer.TCP
}

func parseAffinity(o *object) time.Duration {
	mode, ok := o.str("sessionAffinity")
	if !ok {
		mode = "None"
	}
	secs, hasSecs := o.int("sessionAffinityTimeoutSeconds")
	switch mode {
	case "None":
		if hasSecs {
			o.errorf("sessionAffinityTimeoutSeconds", "only allowed with sessionAffinity ClientIP")
		}
		return 0
	case "ClientIP":
		if !hasSecs {
			secs = defaultAffinitySeconds
		}
		if secs < 1 || secs > maxAffinitySeconds {
			o.errorf("sessionAffinityTimeoutSeconds", "%d is out of range 1-%d", secs, maxAffinitySeconds)
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	o.errorf("sessionAffinity", "%q is not None or ClientIP", mode)
	return 0
}

func parseBackends(o *object) []backend {
	items, _ := o.list("backends")
	if len(items) > loadbalancer.MaxSlots {
		o.errorf("backends", "%d backends, more than the limit of %d", len(items), loadbalancer.MaxSlots)
		return nil
	}
	var out []backend
	seen := map[netip.Addr]string{}
	for j, item := range items {
		bo := asObject(o.p, o.at, fmt.Sprintf("backends[%d]", j), item)
		if bo == nil {
			continue
		}
		b := parseBackend(bo)
		bo.done()
		if !b.addr.IsValid() {
			continue
		}
		if first, dup := seen[b.addr]; dup {
			o.p.add(o.at, b.at+".address", "%s is also %s", b.addr, first)
			continue
		}
		seen[b.addr] = b.at
		out = append(out, b)
	}
	return out
}

func parseBackend(o *object) backend {
	b := backend{at: o.path, state: loadbalancer.Active}
	if s, ok := o.str("address"); !ok {
		o.errorf("address", "missing")
	} else if a, ok := parseIP(o, "address", s); ok {
		b.addr = a
	}
	if v, ok := o.get("ports"); ok {
		if po := asObject(o.p, o.at, o.field("ports"), v); po != nil {
			b.ports = backendPorts(po)
		}
	}
	if s, ok := o.str("state"); ok {
		switch s {
		case "active":
		case "terminating":
			b.state = loadbalancer.Terminating
		default:
			o.errorf("state", "%q is not active or terminating", s)
		}
	}
	return b
}

// backendPorts reads a name -> number map; every key is a field.
func backendPorts(o *object) map[string]uint16 {
	out := make(map[string]uint16, len(o.m))
	for _, name := range slices.Sorted(maps.Keys(o.m)) {
		if msg := checkLabel(name); msg != "" {
			o.errorf(name, "port name %s", msg)
		}
		n, ok := o.int(name)
		switch {
		case ok:
			out[name] = portNumber(o, name, n)
		case o.m[name] == nil:
			o.errorf(name, "must be a port number, not null")
		}
	}
	return out
}

// checkFamilies refuses mixing IPv4 and IPv6: the datapath does not
// translate between them.
func checkFamilies(o *object, vips []vip, backends []backend) {
	if len(vips) == 0 {
		return
	}
	v4 := vips[0].addr.Is4()
	for _, v := range vips[1:] {
		if v.addr.Is4() != v4 {
			o.errorf(v.at, "%s is not of the same IP family as %s", v.addr, vips[0].at)
		}
	}
	for _, b := range backends {
		if b.addr.Is4() != v4 {
			o.p.add(o.at, b.at+".address", "%s is not of the same IP family as %s", b.addr, vips[0].at)
		}
	}
}

// frontends makes one frontend per VIP and port, each with the backends
// that serve the port, chosen by loadbalancer.SelectBackends.
func frontends(p *problems, at string, vips []vip, ports []port, backends []backend, affinity time.Duration) []loadbalancer.FrontendSpec {
	var out []loadbalancer.FrontendSpec
	for _, pt := range ports {
		bes := portBackends(p, at, pt, backends)
		for _, v := range vips {
			out = append(out, loadbalancer.FrontendSpec{
				Frontend: loadbalancer.Frontend{
					L4Addr: loadbalancer.L4Addr{Addr: v.addr, Port: pt.port, Proto: pt.proto},
					Scope:  loadbalancer.ScopeExternal,
					Type:   v.typ,
				},
				Backends:        bes,
				AffinityTimeout: affinity,
			})
		}
	}
	return out
}

func portBackends(p *problems, at string, pt port, backends []backend) []loadbalancer.Backend {
	all := make([]loadbalancer.Backend, 0, len(backends))
	for _, b := range backends {
		target := pt.target
		if pt.targetName != "" {
			n, ok := b.ports[pt.targetName]
			if !ok {
				p.add(at, b.at+".ports", "has no port named %q, which %s.targetPort needs", pt.targetName, pt.at)
				continue
			}
			target = n
		}
		all = append(all, loadbalancer.Backend{
			L4Addr: loadbalancer.L4Addr{Addr: b.addr, Port: target, Proto: pt.proto},
			State:  b.state,
		})
	}
	return loadbalancer.SelectBackends(all)
}

// checkLabel returns why s is not a DNS-1123 label, or "".
func checkLabel(s string) string {
	if s == "" || len(s) > 63 {
		return "must be 1-63 characters"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return "must be lower-case letters, digits and inner '-'"
		}
	}
	return ""
}
