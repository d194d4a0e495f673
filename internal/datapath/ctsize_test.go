package datapath

import "testing"

func TestCTEntriesFor(t *testing.T) {
	const gib = 1 << 30
	if CTEntryBytes < 100 || CTEntryBytes > 300 {
		t.Fatalf("CTEntryBytes %d: the ct key and entry changed size a lot; check the sizing", CTEntryBytes)
	}
	for _, c := range []struct {
		mem  uint64
		want int
	}{
		{1 * gib, CTMinEntries}, // 2.7 MB / entry size: below the floor
		{64 * gib, 0},           // 171 MB: the power of two that fits
		{64*gib + 12345, 0},
		{16384 * gib, CTMaxEntries},
	} {
		got := CTEntriesFor(c.mem, DefaultCTMemoryRatio)
		if c.want == 0 {
			// The exact power depends on the entry size; it must be one
			// whose entries take at most the ratio's memory, and more
			// than half of it.
			budget := float64(c.mem) * DefaultCTMemoryRatio
			if got&(got-1) != 0 || float64(got*CTEntryBytes) > budget || float64(2*got*CTEntryBytes) <= budget {
				t.Errorf("%d GiB: %d entries of %d B for a budget of %.0f B", c.mem/gib, got, CTEntryBytes, budget)
			}
			continue
		}
		if got != c.want {
			t.Errorf("%d bytes: %d entries; want %d", c.mem, got, c.want)
		}
	}
	if a, b := CTEntriesFor(64*(1<<30), DefaultCTMemoryRatio), CTEntriesFor(64*(1<<30)+12345, DefaultCTMemoryRatio); a != b {
		t.Errorf("sizes %d and %d for nearly the same memory; want the same", a, b)
	}
	if got := CTEntriesFor(64*(1<<30), 0.01); got <= CTEntriesFor(64*(1<<30), DefaultCTMemoryRatio) {
		t.Errorf("a larger ratio gives %d entries; want more", got)
	}
}
