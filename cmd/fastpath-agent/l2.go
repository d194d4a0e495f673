package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/l2announce"
)

// l2Flags are the flags of agent.L2Announce.
type l2Flags struct {
	ifaces, namespace *string
	lease             *time.Duration
}

func addL2Flags(fs *flag.FlagSet) l2Flags {
	return l2Flags{
		ifaces: fs.String("l2-announce-interfaces", "", "comma-separated interfaces on which one elected node per LoadBalancer IP "+
			"answers ARP for it (MetalLB's layer2 mode); empty: off. Needs the Kubernetes source"),
		namespace: fs.String("l2-lease-namespace", "kube-system", "namespace of the per-IP Leases electing the announcing node"),
		lease: fs.Duration("l2-lease-duration", l2announce.DefaultLeaseDuration, "how long a dead announcer keeps its IPs "+
			"(the longest failover); renewals come every 2/15 of it"),
	}
}

func (f l2Flags) l2(kube *agent.Kubernetes) (*agent.L2Announce, error) {
	if *f.ifaces == "" {
		return nil, nil
	}
	switch {
	case kube == nil:
		return nil, errors.New("--l2-announce-interfaces elects announcers through Kubernetes Leases: give --kubeconfig")
	case *f.namespace == "":
		return nil, errors.New("--l2-lease-namespace: must not be empty")
	case *f.lease < time.Second:
		return nil, fmt.Errorf("--l2-lease-duration=%s: must be at least 1s", *f.lease)
	}
	return &agent.L2Announce{Interfaces: strings.Split(*f.ifaces, ","), LeaseNamespace: *f.namespace, LeaseDuration: *f.lease}, nil
}
