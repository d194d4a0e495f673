package ctl

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/fastpath-net/fastpath/internal/endpoint"
)

// Endpoints reads the endpoint records the agent's CNI keeps in stateDir
// (its --cni-state-dir), ordered by ID. Records that cannot be read are
// reported in the error; the others are returned.
func Endpoints(stateDir string) ([]endpoint.Endpoint, error) {
	eps, err := endpoint.Load(endpoint.Dir(stateDir))
	out := make([]endpoint.Endpoint, 0, len(eps))
	for _, ep := range eps {
		out = append(out, *ep)
	}
	return out, err
}

// FormatEndpoints renders endpoints as a table.
func FormatEndpoints(eps []endpoint.Endpoint) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tPOD\tIPS\tINTERFACE\tNETNS\tCONTAINER")
	for _, ep := range eps {
		pod := "-"
		if ep.Pod.Name != "" {
			pod = ep.Pod.Namespace + "/" + ep.Pod.Name
		}
		ips := make([]string, len(ep.IPs))
		for i, ip := range ep.IPs {
			ips[i] = ip.String()
		}
		cid := ep.ContainerID
		if len(cid) > 12 {
			cid = cid[:12]
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s/%s\n", ep.ID, pod, strings.Join(ips, ","), ep.Interface, ep.NetNS, cid, ep.IfName)
	}
	w.Flush()
	return b.String()
}
