package loadbalancer

import "fmt"

// Counts are how many frontends and backends the maps hold, as the
// reconciler knows them: what /metrics reports as programmed.
type Counts struct {
	Frontends int // service map slot-0 entries, adopted ones included
	Backends  int // backend map entries
}

// Counts returns the current counts; cheap (no map access).
func (r *Reconciler) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, st := range r.fes {
		if st.svcPresent {
			n++
		}
	}
	return Counts{Frontends: n, Backends: len(r.byID)}
}

// FrontendError is one frontend a Sync could not program, with the
// Service that owns it (zero for a frontend found in the maps and owned by
// no source), so the error can be reported on that Service.
type FrontendError struct {
	Service  ServiceName
	Frontend string
	Err      error
}

func (e *FrontendError) Error() string {
	return fmt.Sprintf("service %s: frontend %s: %v", ownerName(e.Service), e.Frontend, e.Err)
}

func (e *FrontendError) Unwrap() error { return e.Err }
