package svctranslate

import (
	"slices"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// topology is kube-proxy's topology mode (topology.go, topologyModeFromHints).
type topology uint8

const (
	anyTopology topology = iota
	sameNode             // trafficDistribution PreferSameNode
	sameZone             // PreferSameZone / PreferClose, or topology-aware hints
)

// topologyOf decides from the hints of the ready endpoints alone: same node
// when every one has node hints and one names this node; else same zone when
// every one has zone hints and one names this node's zone; else none. The
// hints are written by the EndpointSlice controller for the Service's
// trafficDistribution (or the topology-mode annotation); kube-proxy, and so
// this, reads only the hints.
func topologyOf(tgs []target, node Node) topology {
	ready, allNode, forNode, allZone, forZone := false, true, false, true, false
	for _, tg := range tgs {
		if !tg.ready {
			continue
		}
		ready = true
		allNode = allNode && len(tg.nodeHints) > 0
		forNode = forNode || slices.Contains(tg.nodeHints, node.Name)
		allZone = allZone && len(tg.zoneHints) > 0
		forZone = forZone || (node.Zone != "" && slices.Contains(tg.zoneHints, node.Zone))
	}
	switch {
	case !ready:
		return anyTopology
	case allNode && forNode:
		return sameNode
	case allZone && forZone:
		return sameZone
	}
	return anyTopology
}

func (tp topology) allows(tg target, node Node) bool {
	switch tp {
	case sameNode:
		return slices.Contains(tg.nodeHints, node.Name)
	case sameZone:
		return slices.Contains(tg.zoneHints, node.Zone)
	}
	return true
}

// clusterBackends is kube-proxy's clusterEndpoints: the ready endpoints the
// topology allows; if there are none, every serving and terminating
// endpoint (topology is not applied to the fallback: a topology mode is
// only chosen when a ready endpoint fits it, so an empty set here means no
// ready endpoint anywhere).
func clusterBackends(tgs []target, node Node, proto loadbalancer.Proto) []loadbalancer.Backend {
	tp := topologyOf(tgs, node)
	var cand []loadbalancer.Backend
	for _, tg := range tgs {
		switch {
		case tg.ready && tp.allows(tg, node):
			cand = append(cand, backendOf(tg, proto, loadbalancer.Active))
		case !tg.ready && tg.serving && tg.terminating:
			cand = append(cand, backendOf(tg, proto, loadbalancer.Terminating))
		}
	}
	return loadbalancer.SelectBackends(cand)
}

// localBackends is kube-proxy's localEndpoints: this node's ready endpoints,
// else its serving and terminating ones. Topology does not apply: the set is
// already as close as it gets.
func localBackends(tgs []target, proto loadbalancer.Proto) []loadbalancer.Backend {
	var cand []loadbalancer.Backend
	for _, tg := range tgs {
		switch {
		case !tg.local:
		case tg.ready:
			cand = append(cand, backendOf(tg, proto, loadbalancer.Active))
		case tg.serving && tg.terminating:
			cand = append(cand, backendOf(tg, proto, loadbalancer.Terminating))
		}
	}
	return loadbalancer.SelectBackends(cand)
}

func backendOf(tg target, proto loadbalancer.Proto, state loadbalancer.BackendState) loadbalancer.Backend {
	return loadbalancer.Backend{L4Addr: loadbalancer.L4Addr{Addr: tg.addr, Port: tg.port, Proto: proto}, State: state}
}
