package flows

import "testing"

func TestFilterMatch(t *testing.T) {
	drop := Event{Type: TypeDrop, Verdict: VerdictDropped, Reason: "policy-denied",
		Source:      Endpoint{IP: "10.0.0.1", Namespace: "fp-a", Pod: "client", Identity: 300},
		Destination: Endpoint{IP: "10.0.0.2", Port: 8080, Namespace: "fp-b", Pod: "server", Identity: 301}}
	lb := Event{Type: TypeDrop, Verdict: VerdictDropped, Reason: "no-backend",
		Source: Endpoint{IP: "10.0.0.1", Namespace: "fp-a", Pod: "client"}, Destination: Endpoint{IP: "10.96.0.10", Port: 80}}
	l7 := Event{Type: TypeL7, Verdict: VerdictDenied, L7: &L7{Protocol: "http", Method: "GET"}}
	for _, tc := range []struct {
		name string
		f    Filter
		e    Event
		want bool
	}{
		{"empty", Filter{}, drop, true},
		{"type drop", Filter{Types: []string{"drop"}}, drop, true},
		{"type allow", Filter{Types: []string{"allow"}}, drop, false},
		{"policy type: policy drop", Filter{Types: []string{"policy"}}, drop, true},
		{"policy type: lb drop", Filter{Types: []string{"policy"}}, lb, false},
		{"policy type: l7", Filter{Types: []string{"policy"}}, l7, true},
		{"l7", Filter{Types: []string{"l7"}}, l7, true},
		{"namespace dst", Filter{Namespace: "fp-b"}, drop, true},
		{"namespace none", Filter{Namespace: "fp-c"}, drop, false},
		{"pod short", Filter{Pod: "server"}, drop, true},
		{"pod full", Filter{Pod: "fp-a/client"}, drop, true},
		{"pod wrong ns", Filter{Pod: "fp-b/client"}, drop, false},
		{"port on dst", Filter{Port: 8080}, drop, true},
		{"ns and port on different ends", Filter{Namespace: "fp-a", Port: 8080}, drop, false},
		{"identity", Filter{Identity: 301}, drop, true},
		{"reason", Filter{Reason: "no-backend"}, lb, true},
		{"reason other", Filter{Reason: "no-backend"}, drop, false},
	} {
		if got := tc.f.Match(&tc.e); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHubFansOutAndCountsLoss(t *testing.T) {
	h := NewHub()
	all := h.Subscribe(Filter{}, 4)
	drops := h.Subscribe(Filter{Types: []string{"drop"}}, 1)
	h.Publish(Event{Type: TypeAllow})
	h.Publish(Event{Type: TypeDrop, Reason: "a"})
	h.Publish(Event{Type: TypeDrop, Reason: "b"}) // drops' buffer is full: lost
	if got := len(all.C); got != 3 {
		t.Fatalf("all got %d events, want 3", got)
	}
	if e := <-drops.C; e.Reason != "a" || e.Time.IsZero() {
		t.Fatalf("drops got %+v, want reason a with a time", e)
	}
	if drops.Lost() != 1 {
		t.Fatalf("drops lost %d, want 1", drops.Lost())
	}
	drops.Close()
	drops.Close()
	if _, ok := <-drops.C; ok {
		t.Fatal("C still open after Close")
	}
	h.Publish(Event{Type: TypeDrop})
	if h.Published() != 4 || len(all.C) != 4 {
		t.Fatalf("published %d, all holds %d; want 4, 4", h.Published(), len(all.C))
	}
}
