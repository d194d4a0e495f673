package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/k8s"
)

// kubeFlags are the Kubernetes source's flags.
type kubeFlags struct {
	kubeconfig, nodeName, nodePortAddrs, proxyName *string
}

func addKubeFlags(fs *flag.FlagSet) kubeFlags {
	return kubeFlags{
		kubeconfig: fs.String("kubeconfig", "", "kubeconfig file: take services from this Kubernetes cluster. "+
			"Without it and without --services-file, a pod uses its in-cluster configuration"),
		nodeName: fs.String("node-name", "", "this node's Node name in Kubernetes, for local endpoints, NodePort addresses "+
			"and topology (default: the host name, lower-cased, as kube-proxy)"),
		nodePortAddrs: fs.String("nodeport-addresses", "", "comma-separated CIDRs: NodePort Services listen only on the "+
			"node's InternalIP/ExternalIP addresses inside them (default: all of them)"),
		proxyName: fs.String("service-proxy-name", "", "serve only the Services (and EndpointSlices) labelled "+
			"service.kubernetes.io/service-proxy-name=NAME, so that this agent runs beside kube-proxy or another "+
			"proxy (default: those without the label, as kube-proxy)"),
	}
}

// source returns the Kubernetes source configuration, or nil when the
// services file is the source. Exactly one source: --kubeconfig with
// --services-file is an error; with neither, running in a pod means
// Kubernetes (the kubelet sets KUBERNETES_SERVICE_HOST there).
func (k kubeFlags) source(servicesFile string, inCluster bool) (*agent.Kubernetes, error) {
	switch {
	case *k.kubeconfig != "" && servicesFile != "":
		return nil, errors.New("--kubeconfig and --services-file: give one source of services, not both")
	case *k.kubeconfig == "" && (servicesFile != "" || !inCluster):
		if *k.nodeName != "" || *k.nodePortAddrs != "" || *k.proxyName != "" {
			return nil, errors.New("--node-name, --nodeport-addresses and --service-proxy-name need the Kubernetes source " +
				"(--kubeconfig, or running in a pod)")
		}
		return nil, nil
	}
	if *k.proxyName != "" {
		if err := k8s.ValidateProxyName(*k.proxyName); err != nil {
			return nil, fmt.Errorf("--service-proxy-name: %w", err)
		}
	}
	cidrs, err := parseCIDRs(*k.nodePortAddrs)
	if err != nil {
		return nil, fmt.Errorf("--nodeport-addresses: %w", err)
	}
	name := *k.nodeName
	if name == "" {
		if name, err = k8s.DefaultNodeName(); err != nil {
			return nil, fmt.Errorf("--node-name not given and the host name is unknown: %w", err)
		}
	}
	return &agent.Kubernetes{Kubeconfig: *k.kubeconfig, NodeName: name, NodePortCIDRs: cidrs, ProxyName: *k.proxyName}, nil
}

func parseCIDRs(s string) ([]netip.Prefix, error) {
	if s == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR (like 192.168.0.0/16)", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
