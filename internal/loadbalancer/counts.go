package loadbalancer

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
