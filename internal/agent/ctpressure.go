package agent

import (
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/fastpath-net/fastpath/internal/metrics"
)

// Conntrack fill levels. fp_ct is an LRU hash: full, it does not refuse
// new flows but evicts the least recently used entries, whose connections
// lose their translation (an idle long-lived connection first). Operators
// hear of it before (nearly full) and while it happens (full).
type ctLevel int

const (
	ctOK ctLevel = iota
	ctNearlyFull
	ctFull
)

const (
	// ctNearlyFullRatio is of the usable capacity (lruCapacity).
	ctNearlyFullRatio = 0.90
	ctFullRatio       = 1.0
	// ctHysteresis: a level is left only this far below its threshold, so
	// a table hovering at 90 % does not flap between Events.
	ctHysteresis = 0.05
)

// lruCapacity is the fill at which an LRU hash of max entries may be
// evicting. The kernel keeps free elements on per-CPU lists and evicts as
// soon as the global list runs dry, so an evicting map holds between
// max - slack and max entries, slack being the possible CPUs times their
// free target, clamp(max/cpus/2, 1, 128) (kernel/bpf/bpf_lru_list.c).
// For a map of 262,144 entries on 64 CPUs that is 97 %; for a tiny test map
// half of it.
func lruCapacity(size, cpus int) int {
	cpus = max(cpus, 1)
	slack := cpus * min(max(size/cpus/2, 1), 128)
	return max(size-slack, size/2, 1)
}

// Event reasons on the Node.
const (
	ReasonCTNearlyFull = "FastpathConntrackNearlyFull"
	ReasonCTFull       = "FastpathConntrackFull"
)

// ctPressure judges the fill each GC walk sees.
type ctPressure struct {
	log     *slog.Logger
	metrics *metrics.Metrics
	// event sends a Warning Event on this node's Node; nil without
	// Kubernetes.
	event func(reason, msg string)
	cpus  int // possible CPUs, for lruCapacity
	level ctLevel
}

// nodeEvents returns an event func for the Node named node.
func nodeEvents(rec record.EventRecorder, node string) func(reason, msg string) {
	ref := &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: node, UID: types.UID(node)} // the kubelet's Node reference
	return func(reason, msg string) { rec.Event(ref, corev1.EventTypeWarning, reason, msg) }
}

// observe takes the entries left after a GC walk of a map of max entries.
func (p *ctPressure) observe(live, max int) {
	if max <= 0 {
		return
	}
	fill := float64(live) / float64(lruCapacity(max, p.cpus))
	next := p.next(fill)
	p.metrics.ObserveCTFill(next == ctFull)
	if next == p.level {
		return
	}
	prev := p.level
	p.level = next
	pct := fmt.Sprintf("%.0f%%", 100*float64(live)/float64(max))
	switch next {
	case ctFull:
		msg := fmt.Sprintf("conntrack table fp_ct is full (%d of %d entries): new connections evict the least recently used entries (LRU), "+
			"whose connections lose their translation; raise --ct-max or --ct-memory-ratio", live, max)
		p.log.Warn(msg, "entries", live, "max", max)
		p.send(ReasonCTFull, msg)
	case ctNearlyFull:
		if prev == ctFull {
			p.log.Info("conntrack table fp_ct is no longer full", "fill", pct)
			return
		}
		msg := fmt.Sprintf("conntrack table fp_ct is %s full (%d of %d entries); when full, the least recently used entries are evicted: "+
			"raise --ct-max or --ct-memory-ratio", pct, live, max)
		p.log.Warn(msg, "entries", live, "max", max)
		p.send(ReasonCTNearlyFull, msg)
	case ctOK:
		p.log.Info("conntrack table fp_ct is below the warning level again", "fill", pct)
	}
}

// next is the level for fill, leaving the current one only below its
// threshold minus the hysteresis.
func (p *ctPressure) next(fill float64) ctLevel {
	raw := ctOK
	switch {
	case fill >= ctFullRatio:
		raw = ctFull
	case fill >= ctNearlyFullRatio:
		raw = ctNearlyFull
	}
	if raw >= p.level {
		return raw
	}
	threshold := map[ctLevel]float64{ctNearlyFull: ctNearlyFullRatio, ctFull: ctFullRatio}[p.level]
	if fill >= threshold-ctHysteresis {
		return p.level
	}
	return raw
}

func (p *ctPressure) send(reason, msg string) {
	if p.event != nil {
		p.event(reason, msg)
	}
}
