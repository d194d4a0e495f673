package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/lab"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
)

// coldRow is one agent's full computation: restarted with the whole
// cluster in the apiserver (every identity already allocated, its pinned
// maps kept, as after an upgrade), from exec until its log says the
// informers' first state is in the policy maps.
type coldRow struct {
	Node string
	// From exec: the policy informers have synced (the Engine holds
	// every object) and the maps are programmed (computed and written).
	Synced, Programmed       time.Duration
	CPUSynced, CPUProgrammed procstat.CPUTime
	Load                     string
}

// Compute is the CPU between the informers' sync and the programmed
// maps: the policy computation and its map writes alone.
func (r coldRow) Compute() time.Duration { return r.CPUProgrammed.Sub(r.CPUSynced).Total() }

const msgSynced = "policy: informers synced; enforcing"

// coldStarts restarts the agents one after the other (so they do not
// compete for the CPU) and times each.
func (b *bench) coldStarts(ctx context.Context) ([]coldRow, error) {
	var rows []coldRow
	for i := 1; i <= b.cfg.Nodes; i++ {
		r, err := b.coldStart(ctx, i)
		if err != nil {
			return rows, err
		}
		rows = append(rows, r)
		logf(b.cfg, "cold start %s: synced %s (CPU %s), programmed %s (CPU %s; %s after the sync)", r.Node,
			ms(r.Synced), ms(r.CPUSynced.Total()), ms(r.Programmed), ms(r.CPUProgrammed.Total()), ms(r.Compute()))
	}
	return rows, nil
}

func (b *bench) coldStart(ctx context.Context, i int) (coldRow, error) {
	r := coldRow{Node: lab.NodeName(i), Load: procstat.LoadAvg()}
	logPath := lab.AgentLog(i)
	fi, err := os.Stat(logPath)
	if err != nil {
		return r, err
	}
	offset := fi.Size()
	pid, err := lab.RestartAgent(b.labOpts, i)
	if err != nil {
		return r, err
	}
	start := time.Now()
	deadline := start.Add(2 * time.Minute)
	for r.Programmed == 0 {
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return r, err
		}
		text, err := readFrom(logPath, offset)
		if err != nil {
			return r, err
		}
		synced, programmed := strings.Contains(text, msgSynced), strings.Contains(text, agent.MsgPolicyProgrammed)
		if (synced && r.Synced == 0) || programmed {
			cpu, err := procstat.CPU(pid)
			if err != nil {
				return r, fmt.Errorf("agent of %s: %w\n%s", r.Node, err, tail(text, 20))
			}
			if r.Synced == 0 {
				r.Synced, r.CPUSynced = time.Since(start), cpu
			}
			if programmed {
				r.Programmed, r.CPUProgrammed = time.Since(start), cpu
			}
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("agent of %s: not programmed 2 minutes after its start\n%s", r.Node, tail(text, 20))
		}
	}
	return r, nil
}

func readFrom(path string, offset int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "", err
	}
	b, err := io.ReadAll(f)
	return string(b), err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bulkRow is one agent's work while the bulk objects arrived in the
// running cluster: from the first write until its ipcache judged every
// bulk pod by a cluster identity.
type bulkRow struct {
	Node      string
	Converged time.Duration // from the first write
	CPU       procstat.CPUTime
	// IdleRate is the agent's CPU seconds per second before the bulk;
	// Net is CPU less IdleRate times Converged: what the bulk cost.
	IdleRate float64
	Net      time.Duration
}

// idleWindow measures the agents' idle CPU rate before the bulk.
const idleWindow = 3 * time.Second

// loadBulk creates the bulk objects and waits until every node's ipcache
// knows every bulk pod by a cluster identity (which the pods' nodes
// allocated), with each agent's CPU over that time.
func (b *bench) loadBulk(ctx context.Context, nodeIPs map[string]string) (created time.Duration, rows []bulkRow, err error) {
	pids := make([]int, b.cfg.Nodes)
	cpu0 := make([]procstat.CPUTime, b.cfg.Nodes)
	for i := range pids {
		if pids[i], err = lab.AgentPID(i + 1); err != nil {
			return 0, nil, err
		}
		if cpu0[i], err = procstat.CPU(pids[i]); err != nil {
			return 0, nil, err
		}
	}
	if err := sleep(ctx, idleWindow); err != nil {
		return 0, nil, err
	}
	idle := make([]float64, b.cfg.Nodes)
	for i := range pids {
		c, err := procstat.CPU(pids[i])
		if err != nil {
			return 0, nil, err
		}
		idle[i] = c.Sub(cpu0[i]).Total().Seconds() / idleWindow.Seconds()
		cpu0[i] = c
	}
	start := time.Now()
	if err := createBulk(ctx, b.cs, b.cfg, nodeIPs); err != nil {
		return 0, nil, err
	}
	created = time.Since(start)
	// The agents' work follows the writes.
	prof := b.profile(ctx, "bulk", 30)
	defer prof.wait(b.cfg)
	logf(b.cfg, "bulk: %d namespaces, %d pods, %d policies written in %s", b.cfg.Namespaces, b.cfg.bulkPods(), b.cfg.Policies, ms(created))
	ips := make([]netip.Addr, b.cfg.bulkPods())
	for j := range ips {
		ips[j] = bulkPodIP(j)
	}
	rows = make([]bulkRow, b.cfg.Nodes)
	left := b.cfg.Nodes
	deadline := time.Now().Add(5 * time.Minute)
	for left > 0 {
		for i, c := range b.caches {
			if rows[i].Node != "" {
				continue
			}
			n, err := c.identified(ips)
			if err != nil {
				return created, rows, err
			}
			if n == len(ips) {
				cpu, err := procstat.CPU(pids[i])
				if err != nil {
					return created, rows, err
				}
				r := bulkRow{Node: lab.NodeName(i + 1), Converged: time.Since(start), CPU: cpu.Sub(cpu0[i]), IdleRate: idle[i]}
				r.Net = max(0, r.CPU.Total()-time.Duration(r.IdleRate*float64(r.Converged)))
				rows[i] = r
				left--
				logf(b.cfg, "bulk: %s knows every bulk pod's identity after %s (agent CPU %s, %s net of idle)", r.Node, ms(r.Converged), ms(r.CPU.Total()), ms(r.Net))
			}
		}
		if time.Now().After(deadline) {
			return created, rows, fmt.Errorf("bulk: %d node(s) do not know every bulk pod's identity after 5 minutes", left)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return created, rows, err
		}
	}
	return created, rows, nil
}
