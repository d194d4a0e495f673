// Package birdc configures and queries BIRD 2 (Debian's bird2), the
// upstream router of the BGP tests and the lab: it renders the router's
// configuration and reads what it learned through birdc. Starting the
// daemon stays with the caller (a test thread, or a recorded lab process).
package birdc

import (
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

// Config is a router that installs every route it learns over BGP into its
// namespace's kernel table (equal-cost paths merged) and exports nothing.
type Config struct {
	RouterID  netip.Addr
	ASN       int
	Neighbors []Neighbor
}

// Neighbor is one node the router opens a session to.
type Neighbor struct {
	Name     string // the BGP protocol's name in BIRD
	Addr     netip.Addr
	Port     int // 0: 179
	ASN      int
	Password string // TCP MD5; "": none
}

// String is the configuration file. Short retry timers: a test or the lab
// restarts agents and wants the sessions back within seconds. Graceful
// restart on: BIRD keeps a restarting node's routes.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, `router id %s;
log stderr all;
protocol device { scan time 1; }
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
template bgp node {
	local %s as %d;
	ipv4 { import all; export none; };
	graceful restart on;
	connect delay time 1;
	connect retry time 1;
	error wait time 1, 2;
}
`, c.RouterID, c.RouterID, c.ASN)
	for _, n := range c.Neighbors {
		port := ""
		if n.Port != 0 {
			port = fmt.Sprintf(" port %d", n.Port)
		}
		password := ""
		if n.Password != "" {
			password = fmt.Sprintf(" password %q;", n.Password)
		}
		fmt.Fprintf(&b, "protocol bgp %s from node { neighbor %s%s as %d;%s }\n", n.Name, n.Addr, port, n.ASN, password)
	}
	return b.String()
}

// Show runs `birdc -s sock show args...` and returns its output; a prefix
// BIRD has no route for is no error.
func Show(sock string, args ...string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", sock, "show"}, args...)...).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Network not found") {
		return "", fmt.Errorf("birdc show %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

var via = regexp.MustCompile(`via (\S+) on`)

// NextHops are the next hops of the routes BIRD holds for prefix, sorted.
func NextHops(sock string, prefix netip.Prefix) ([]netip.Addr, error) {
	out, err := Show(sock, "route", prefix.String())
	if err != nil {
		return nil, err
	}
	var hops []netip.Addr
	for _, m := range via.FindAllStringSubmatch(out, -1) {
		if a, err := netip.ParseAddr(m[1]); err == nil && !slices.Contains(hops, a) {
			hops = append(hops, a)
		}
	}
	slices.SortFunc(hops, netip.Addr.Compare)
	return hops, nil
}
