package agent

import "time"

// backoff is a retry timer whose delay doubles on each scheduled retry, up
// to max, and returns to min after a success.
type backoff struct {
	min, max time.Duration
	next     time.Duration
	timer    *time.Timer
}

func newBackoff(min, max time.Duration) *backoff {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &backoff{min: min, max: max, next: min, timer: t}
}

// C fires when a scheduled retry is due.
func (b *backoff) C() <-chan time.Time { return b.timer.C }

// schedule arms the timer with the current delay and doubles the next one.
func (b *backoff) schedule() {
	b.timer.Reset(b.next)
	b.next = min(2*b.next, b.max)
}

// reset cancels a pending retry and starts the next failure at min again.
func (b *backoff) reset() {
	b.timer.Stop()
	b.next = b.min
}

func (b *backoff) stop() { b.timer.Stop() }
