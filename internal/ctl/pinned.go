// Package ctl implements fastpathctl's views. Every view is computed from
// the pinned BPF maps, never from a copy kept by the agent, so what it shows
// is what packets get.
package ctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Pinned is a read-only view of the maps an agent pinned.
type Pinned struct {
	Dir      string
	LB       lbmap.Maps
	CT       bpfmap.Map[ctmap.Key, ctmap.Entry]
	Affinity bpfmap.Map[lbmap.AffinityKey, lbmap.AffinityValue]
	Metrics  *ebpf.Map
	raw      map[string]*ebpf.Map
}

// MapNames are the maps fastpathctl knows, in display order.
var MapNames = []string{"fp_services", "fp_backends", "fp_rev_nat", "fp_ct", "fp_sock_revnat", "fp_affinity", "fp_source_ranges", "fp_config", "fp_metrics"}

// Open opens the maps pinned under dir/maps.
func Open(dir string) (*Pinned, error) {
	p := &Pinned{Dir: dir, raw: map[string]*ebpf.Map{}}
	for _, name := range MapNames {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "maps", name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			p.Close()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("no fastpath datapath pinned at %s (map %s missing): is the agent running with --bpffs-dir=%s?", dir, name, dir)
			}
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		p.raw[name] = m
	}
	p.LB = lbmap.Maps{
		Services: bpfmap.NewKernel[lbmap.ServiceKey, lbmap.ServiceValue](p.raw["fp_services"], "fp_services"),
		Backends: bpfmap.NewKernel[uint32, lbmap.Backend](p.raw["fp_backends"], "fp_backends"),
		RevNat:   bpfmap.NewKernel[uint32, lbmap.RevNat](p.raw["fp_rev_nat"], "fp_rev_nat"),

		SourceRanges: bpfmap.NewKernel[lbmap.SourceRangeKey, uint8](p.raw["fp_source_ranges"], "fp_source_ranges"),
	}
	p.CT = bpfmap.NewKernel[ctmap.Key, ctmap.Entry](p.raw["fp_ct"], "fp_ct")
	p.Affinity = bpfmap.NewKernel[lbmap.AffinityKey, lbmap.AffinityValue](p.raw["fp_affinity"], "fp_affinity")
	p.Metrics = p.raw["fp_metrics"]
	return p, nil
}

// Close releases the map handles.
func (p *Pinned) Close() {
	for _, m := range p.raw {
		m.Close()
	}
}
