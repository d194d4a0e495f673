package e2e

import (
	"testing"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// affinityService is webService with sessionAffinity: ClientIP.
func (l *lab) affinityService(backends ...string) string {
	return l.webService(backends...) + "    sessionAffinity: ClientIP\n    sessionAffinityTimeoutSeconds: 600\n"
}

// affinityRows reads the pinned affinity map. fastpathctl has no command
// for it yet, so this goes through the same internal/ctl view.
func (l *lab) affinityRows() []ctl.AffinityRow {
	l.t.Helper()
	p, err := ctl.Open(l.pinDir)
	if err != nil {
		l.t.Fatal(err)
	}
	defer p.Close()
	rows, err := ctl.Affinity(p.LB, p.Affinity)
	if err != nil {
		l.t.Fatal(err)
	}
	return rows
}

// stickyBackend makes n connections from ns and returns the one backend
// they all reached.
func stickyBackend(t *testing.T, who string, ns *nettopo.NS, n int) string {
	t.Helper()
	seen := askMany(t, ns, n)
	if len(seen) != 1 {
		t.Fatalf("%d connections from %s reached %v; want a single backend (sessionAffinity: ClientIP)", n, who, seen)
	}
	for be := range seen {
		return be
	}
	return ""
}

// Each client sticks to one backend, across an agent restart; when its
// backend leaves the service it moves to another and sticks there.
func TestSessionAffinityKeepsEachClientOnOneBackend(t *testing.T) {
	// client2 is a second client host; newLab gives it a whoami it never uses.
	l := newLab(t, "be1", "be2", "client2")
	l.extra = []string{"--affinity-max", "512"}
	l.writeServices(l.affinityService("be1", "be2"))
	l.startAgent()
	l.waitBackends(httpFrontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	clients := map[string]*nettopo.NS{"client": l.client(), "client2": l.star.Host("client2").NS}

	stuck := map[string]string{}
	for name, ns := range clients {
		stuck[name] = stickyBackend(t, name, ns, 20)
	}
	l.wantAffinity(stuck)
	var st ctl.Status
	l.ctl(&st, "status")
	if m := mapStatus(st, "fp_affinity"); m.MaxEntries != 512 || m.Entries != len(clients) {
		t.Fatalf("status shows fp_affinity %+v; want %d entries of max 512 (--affinity-max)", m, len(clients))
	}

	// The memory is in a pinned map: a restarted agent keeps it.
	l.stopAgent()
	l.startAgent()
	l.waitBackends(httpFrontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	for name, ns := range clients {
		if be := stickyBackend(t, name, ns, 5); be != stuck[name] {
			t.Fatalf("after an agent restart %s reached %s; before it stuck to %s", name, be, stuck[name])
		}
	}

	// client's backend leaves: new connections go to the other one, and
	// the memories follow.
	gone := stuck["client"]
	other := map[string]string{"be1": "be2", "be2": "be1"}[gone]
	l.writeServices(l.affinityService(other))
	l.waitBackends(httpFrontend, l.backendAddr(other)+":8080")
	for name, ns := range clients {
		if be := stickyBackend(t, name, ns, 10); be != other {
			t.Fatalf("with %s removed, %s reached %s; want %s", gone, name, be, other)
		}
		stuck[name] = other
	}
	l.wantAffinity(stuck)
}

// wantAffinity fails unless the pinned map holds, for the web frontend,
// exactly one followed entry per client naming the backend it stuck to.
func (l *lab) wantAffinity(stuck map[string]string) {
	l.t.Helper()
	rows := l.affinityRows()
	got := map[string]string{}
	for _, r := range rows {
		if r.Frontend == httpFrontend && r.Followed {
			got[r.Client] = r.Backend
		}
	}
	want := map[string]string{}
	for name, be := range stuck {
		want[l.star.Host(name).Addr.String()] = l.backendAddr(be) + ":8080"
	}
	if len(got) != len(want) {
		l.t.Fatalf("affinity entries %+v; want %v", rows, want)
	}
	for client, be := range want {
		if got[client] != be {
			l.t.Fatalf("affinity entries %+v; want %v", rows, want)
		}
	}
}

func mapStatus(st ctl.Status, name string) ctl.MapStatus {
	for _, m := range st.Maps {
		if m.Name == name {
			return m
		}
	}
	return ctl.MapStatus{}
}
