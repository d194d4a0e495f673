package benchmain

import (
	"flag"
	"slices"
	"testing"
	"time"
)

func TestPreset(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	d := fs.Duration("d", time.Second, "")
	n := fs.Int("n", 1, "")
	if err := fs.Parse([]string{"-n", "7"}); err != nil {
		t.Fatal(err)
	}
	if err := Preset(fs, map[string]string{"d": "5ms", "n": "3"}); err != nil {
		t.Fatal(err)
	}
	if *d != 5*time.Millisecond || *n != 7 {
		t.Fatalf("d %s n %d: the preset must fill d and leave the explicit n", *d, *n)
	}
	fresh := flag.NewFlagSet("y", flag.ContinueOnError)
	fresh.Duration("d", time.Second, "")
	if err := Preset(fresh, map[string]string{"d": "soon"}); err == nil {
		t.Fatal("bad preset value: no error")
	}
}

func TestIntList(t *testing.T) {
	got, err := IntList(" 100, 1_000,,10000", 1, 20000)
	if err != nil || !slices.Equal(got, []int{100, 1000, 10000}) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"0", "x", "20001", "1.5"} {
		if _, err := IntList(bad, 1, 20000); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestQuantile(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond, 0: time.Millisecond} {
		if got := Quantile(s, q); got != want {
			t.Errorf("q%.2f = %s, want %s", q, got, want)
		}
	}
	if s[0] != 100*time.Millisecond {
		t.Error("Quantile sorted its input")
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("empty: want 0")
	}
}
