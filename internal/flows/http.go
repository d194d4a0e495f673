package flows

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ParseFilter reads a filter from URL query parameters: type (repeated or
// comma-separated: drop, allow, l7, policy), namespace, pod, identity,
// port, reason. Errors name the parameter.
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{Namespace: q.Get("namespace"), Pod: q.Get("pod"), Reason: q.Get("reason")}
	for _, v := range q["type"] {
		for _, t := range strings.Split(v, ",") {
			switch t {
			case string(TypeDrop), string(TypeAllow), string(TypeL7), "policy":
				f.Types = append(f.Types, t)
			case "":
			default:
				return f, fmt.Errorf("type %q: want drop, allow, l7 or policy", t)
			}
		}
	}
	if s := q.Get("identity"); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return f, fmt.Errorf("identity %q: want a number", s)
		}
		f.Identity = uint32(n)
	}
	if s := q.Get("port"); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return f, fmt.Errorf("port %q: want 1-65535", s)
		}
		f.Port = uint16(n)
	}
	return f, nil
}

// Query is the inverse of ParseFilter.
func (f Filter) Query() url.Values {
	q := url.Values{}
	for _, t := range f.Types {
		q.Add("type", t)
	}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("namespace", f.Namespace)
	set("pod", f.Pod)
	set("reason", f.Reason)
	if f.Identity != 0 {
		q.Set("identity", strconv.FormatUint(uint64(f.Identity), 10))
	}
	if f.Port != 0 {
		q.Set("port", strconv.Itoa(int(f.Port)))
	}
	return q
}

// StreamHandler serves the hub's events as newline-delimited JSON, one
// Event a line, filtered by the query (ParseFilter), until the client
// goes away. A client that reads too slowly loses events rather than
// holding the hub up; each loss is reported in-line as an event of
// Type "lost" whose Summary says how many. So are the records the
// datapath did not write (unwritten, a running count; nil: not known),
// which a filter cannot tell apart, so every client sees them.
func StreamHandler(h *Hub, unwritten func() uint64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := ParseFilter(r.URL.Query())
		if err != nil {
			http.Error(w, "flows: "+err.Error(), http.StatusBadRequest)
			return
		}
		sub := h.Subscribe(f, 1024)
		defer sub.Close()
		// The baseline before the client sees the response start: records
		// unwritten after that are the client's to hear about.
		var lost, skipped uint64
		if unwritten != nil {
			skipped = unwritten()
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		enc := json.NewEncoder(w)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case e := <-sub.C:
				if enc.Encode(e) != nil {
					return
				}
				// Flush only when nothing else is waiting: one write per burst.
				if len(sub.C) == 0 && rc.Flush() != nil {
					return
				}
			case <-tick.C:
				var notes []string
				if n := sub.Lost(); n != lost {
					notes = append(notes, fmt.Sprintf("%d events lost: this client read too slowly", n-lost))
					lost = n
				}
				if unwritten != nil {
					if n := unwritten(); n > skipped {
						notes = append(notes, fmt.Sprintf("%d records not written by the datapath: over the drop records' budget "+
							"(--monitor-drops-per-sec) or the ring full (counted in fp_policy_metrics)", n-skipped))
						skipped = n
					}
				}
				for _, note := range notes {
					if enc.Encode(Event{Time: time.Now(), Type: TypeLost, Summary: note}) != nil || rc.Flush() != nil {
						return
					}
				}
			}
		}
	})
}
