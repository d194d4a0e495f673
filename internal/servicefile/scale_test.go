package servicefile

import (
	"bytes"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// bigFile is a services file of n services, 7 lines each: name, namespace,
// clusterIP, one port in flow style and one backend, as an operator's
// generated file at scale looks. Every service is valid and unique.
func bigFile(n int) []byte {
	var b bytes.Buffer
	b.Grow(n * 200)
	b.WriteString("# generated\nservices:\n")
	for i := range n {
		fmt.Fprintf(&b, `  - name: svc-%d
    namespace: bench
    clusterIP: 10.%d.%d.%d
    ports: [{name: http, port: 80, targetPort: http}]
    backends:
      - address: 10.%d.%d.%d
        ports: {http: 8080}
`, i, 96+i>>16, i>>8&0xff, i&0xff, 160+i>>16, i>>8&0xff, i&0xff)
	}
	return b.Bytes()
}

// bigJSONFile is bigFile as JSON.
func bigJSONFile(n int) []byte {
	var b bytes.Buffer
	b.Grow(n * 220)
	b.WriteString(`{"services": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"name": "svc-%d", "namespace": "bench", "clusterIP": "10.%d.%d.%d", "ports": [{"name": "http", "port": 80, "targetPort": "http"}], "backends": [{"address": "10.%d.%d.%d", "ports": {"http": 8080}}]}`,
			i, 96+i>>16, i>>8&0xff, i&0xff, 160+i>>16, i>>8&0xff, i&0xff)
	}
	b.WriteString("]}\n")
	return b.Bytes()
}

func BenchmarkParse50k(b *testing.B) {
	data := bigFile(50000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		svcs, err := Parse(data)
		if err != nil || len(svcs) != 50000 {
			b.Fatalf("%d services, %v", len(svcs), err)
		}
	}
}

func BenchmarkParse50kJSON(b *testing.B) {
	data := bigJSONFile(50000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		svcs, err := Parse(data)
		if err != nil || len(svcs) != 50000 {
			b.Fatalf("%d services, %v", len(svcs), err)
		}
	}
}

// heapGrowth runs f and returns how far the heap (bytes in heap objects,
// live or not yet collected) rose above where it was before, at its
// highest while f ran (sampled every millisecond), and after f once
// collected, with what f keeps referenced by the caller.
func heapGrowth(f func()) (peak, kept uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runtime.GC()
	base := read()
	high := base
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			high = max(high, read())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	f()
	close(stop)
	wg.Wait()
	high = max(high, read())
	runtime.GC()
	return high - base, max(read(), base) - base
}

// Parsing 50,000 services stays far below the agent's memory budget: the
// file is parsed one service at a time, not as a tree of the whole file
// (which took the heap over 300 MiB higher). The bounds are generous: with
// GOGC=100 the heap peaks at about twice what is live, the services kept
// take about 15 MiB, and the peak was about 55 MiB.
func TestParse50kMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("parses 50,000 services")
	}
	const maxPeak, maxKept = 120 << 20, 64 << 20
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, c := range []struct {
		name string
		data []byte
	}{{"yaml", bigFile(50000)}, {"json", bigJSONFile(50000)}} {
		t.Run(c.name, func(t *testing.T) {
			var svcs []lb.Service
			var err error
			start := time.Now()
			peak, kept := heapGrowth(func() { svcs, err = Parse(c.data) })
			if err != nil || len(svcs) != 50000 {
				t.Fatalf("%d services, %v", len(svcs), err)
			}
			t.Logf("%d bytes in %v: heap +%d MiB at the peak, +%d MiB kept", len(c.data), time.Since(start), peak>>20, kept>>20)
			if peak > maxPeak {
				t.Errorf("the heap rose %d MiB while parsing; want less than %d MiB", peak>>20, maxPeak>>20)
			}
			if kept > maxKept {
				t.Errorf("the parsed services take %d MiB; want less than %d MiB", kept>>20, maxKept>>20)
			}
			runtime.KeepAlive(svcs)
		})
	}
}
