package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// TestReportFailures: a sync's frontend failures reach each owning Service
// as one message, frontends owned by no Service are left to the log, and a
// Service is cleared once a sync succeeds without it.
func TestReportFailures(t *testing.T) {
	var got []string
	o := &ops{log: slog.New(slog.NewTextHandler(io.Discard, nil)), failed: map[loadbalancer.ServiceName]bool{},
		report: func(n loadbalancer.ServiceName, err error) { got = append(got, fmt.Sprintf("%s: %v", n, err)) }}
	a, b := loadbalancer.ServiceName{Namespace: "ns", Name: "a"}, loadbalancer.ServiceName{Namespace: "ns", Name: "b"}
	full := fmt.Errorf("%w: no space", bpfmap.ErrFull)
	fe := func(n loadbalancer.ServiceName, f string) error {
		return &loadbalancer.FrontendError{Service: n, Frontend: f, Err: full}
	}
	check := func(err error, want ...string) {
		t.Helper()
		got = nil
		o.reportFailures(err)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("reports\n%q\nwant\n%q", got, want)
		}
	}
	check(errors.Join(fe(b, "10.96.0.2:80/TCP"), fe(a, "10.96.0.1:80/TCP"), fe(a, "10.96.0.1:443/TCP"), fe(loadbalancer.ServiceName{}, "10.96.0.9:80/TCP")),
		"ns/a: service ns/a: frontend 10.96.0.1:443/TCP: map is full: no space; service ns/a: frontend 10.96.0.1:80/TCP: map is full: no space",
		"ns/b: service ns/b: frontend 10.96.0.2:80/TCP: map is full: no space")
	check(errors.Join(fe(a, "10.96.0.1:80/TCP")),
		"ns/a: service ns/a: frontend 10.96.0.1:80/TCP: map is full: no space", "ns/b: <nil>")
	check(nil, "ns/a: <nil>")
	check(nil)
}
