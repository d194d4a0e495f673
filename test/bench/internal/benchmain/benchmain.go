// Package benchmain is what every benchmark command's main does alike:
// parse flags (with a -quick preset), run with a context that Ctrl-C and
// SIGTERM cancel so cleanup still runs, and exit with a code that says
// which of the two failed.
package benchmain

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Main parses os.Args with parse and runs run; name prefixes errors. Exit
// codes: 0 (also for -help), 2 for bad flags, 1 when run fails.
func Main[C any](name string, parse func([]string) (C, error), run func(context.Context, C) error) {
	cfg, err := parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Preset sets each named flag of a parsed fs to its preset value unless the
// command line gave it: -quick's values, with explicit flags winning.
func Preset(fs *flag.FlagSet, values map[string]string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, v := range values {
		if set[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("preset -%s=%s: %w", name, v, err)
		}
	}
	return nil
}

// IntList parses comma-separated whole numbers in lo..hi ("1_000" allowed).
func IntList(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ReplaceAll(f, "_", ""))
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < lo || v > hi {
			return nil, fmt.Errorf("%q: want whole numbers %d..%d", f, lo, hi)
		}
		out = append(out, v)
	}
	return out, nil
}

// Quantile is the nearest-rank q-quantile of samples (0 when empty); it
// leaves samples as they are.
func Quantile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(q*float64(len(s)) + 0.999999)
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// TestLog is a log writer for a harness run inside a test: each line goes
// to t.Log.
func TestLog(t testing.TB) io.Writer { return testLog{t} }

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ReadCSV reads a whole CSV file a harness wrote, failing t when it is
// missing or not well-formed.
func ReadCSV(t testing.TB, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s is not well-formed CSV: %v", path, err)
	}
	return rows
}
