package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with a space and a ')' in it; utime 150, stime 25,
	// cutime 7, cstime 3 ticks.
	line := "4242 (kube (proxy)) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 7 3 20 0 12 0 500 800000000 9000 18446744073709551615\n"
	c, err := ParseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if c.Self != 1750*time.Millisecond || c.Children != 100*time.Millisecond || c.Total() != 1850*time.Millisecond {
		t.Fatalf("got %+v", c)
	}
	if d := c.Sub(CPUTime{Self: time.Second}); d.Self != 750*time.Millisecond || d.Children != c.Children {
		t.Fatalf("Sub: %+v", d)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 a 25 7 3 20"} {
		if _, err := ParseStat(bad); err == nil {
			t.Errorf("ParseStat(%q): no error", bad)
		}
	}
}

func TestCPUAndMemOfSelf(t *testing.T) {
	if _, err := CPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	rss, hwm, err := Mem(os.Getpid())
	if err != nil || rss == 0 || hwm < rss {
		t.Fatalf("rss %d hwm %d err %v", rss, hwm, err)
	}
}
