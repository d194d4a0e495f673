package flows

import (
	"bufio"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseFilterRoundTrip(t *testing.T) {
	f := Filter{Types: []string{"drop", "l7"}, Namespace: "fp-a", Pod: "fp-a/web", Identity: 4711, Port: 8080, Reason: "no-backend"}
	got, err := ParseFilter(f.Query())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Types, ",") != "drop,l7" || got.Namespace != f.Namespace || got.Pod != f.Pod ||
		got.Identity != f.Identity || got.Port != f.Port || got.Reason != f.Reason {
		t.Fatalf("round trip %+v, want %+v", got, f)
	}
	for q, field := range map[string]string{"type=flood": "type", "identity=x": "identity", "port=0": "port", "port=70000": "port"} {
		v, _ := url.ParseQuery(q)
		if _, err := ParseFilter(v); err == nil || !strings.HasPrefix(err.Error(), field) {
			t.Errorf("%s: error %v, want one naming %s", q, err, field)
		}
	}
}

// The stream reports, in-line, records the datapath did not write since
// the client connected (not those before).
func TestStreamReportsUnwrittenRecords(t *testing.T) {
	var unwritten atomic.Uint64
	unwritten.Store(40) // before the client: not reported
	hub := NewHub()
	srv := httptest.NewServer(StreamHandler(hub, unwritten.Load))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/?type=drop")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("content type %q", ct)
	}
	unwritten.Add(7)
	done := make(chan Event, 1)
	go func() {
		var e Event
		sc := bufio.NewScanner(resp.Body)
		if sc.Scan() {
			json.Unmarshal(sc.Bytes(), &e)
		}
		done <- e
	}()
	select {
	case e := <-done:
		if e.Type != TypeLost || !strings.HasPrefix(e.Summary, "7 records not written by the datapath") {
			t.Fatalf("first line %+v, want a lost line about 7 records", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no line about the unwritten records")
	}
}
