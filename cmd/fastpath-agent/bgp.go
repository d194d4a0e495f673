package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/bgp"
)

// bgpFlags are the flags of agent.BGP.
type bgpFlags struct {
	enable    *bool
	port      *int
	namespace *string
}

func addBGPFlags(fs *flag.FlagSet) bgpFlags {
	return bgpFlags{
		enable: fs.Bool("enable-bgp", false, "advertise LoadBalancer IPs (and pod CIDRs) over BGP as FastpathBGPPeeringPolicy objects say "+
			"(deploy/crds/fastpathbgppeeringpolicies.yaml). Needs the Kubernetes source"),
		port: fs.Int("bgp-listen-port", bgp.DefaultListenPort, "TCP port the BGP speaker listens on in the node's namespace (--netns); "+
			"the routers open the sessions"),
		namespace: fs.String("bgp-secret-namespace", "kube-system", "namespace of the Secrets holding BGP peers' TCP MD5 passwords"),
	}
}

func (f bgpFlags) bgp(kube *agent.Kubernetes) (*agent.BGP, error) {
	if !*f.enable {
		return nil, nil
	}
	switch {
	case kube == nil:
		return nil, errors.New("--enable-bgp reads FastpathBGPPeeringPolicies from Kubernetes: give --kubeconfig")
	case *f.port < 1 || *f.port > 65535:
		return nil, fmt.Errorf("--bgp-listen-port=%d: must be 1..65535", *f.port)
	case *f.namespace == "":
		return nil, errors.New("--bgp-secret-namespace: must not be empty")
	}
	return &agent.BGP{ListenPort: *f.port, SecretNamespace: *f.namespace}, nil
}
