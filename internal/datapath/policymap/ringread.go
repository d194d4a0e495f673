package policymap

import (
	"errors"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// ReadVerdicts returns the verdict records r holds now: it reads until none
// has come for quiet. For tests and one-shot reads; the agent's reader
// streams instead.
func ReadVerdicts(r *ringbuf.Reader, quiet time.Duration) ([]Verdict, error) {
	var out []Verdict
	for {
		r.SetDeadline(time.Now().Add(quiet))
		rec, err := r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		v, err := DecodeVerdict(rec.RawSample)
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
}
