package lab

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

const (
	// bigBody is the request body streamed through the proxy.
	bigBody = 100 << 20
	// proxyBodyRSS bounds how much the proxy's agent may grow at its peak
	// while it forwards bigBody: far below the body, so a proxy that
	// buffered it would fail.
	proxyBodyRSS = 32 << 20
)

// bigBodyThroughProxy streams a 100 MB request body from the client through
// the real redirect (an allowed request, POST /private with the token, to
// the web pod at url, whose ingress has HTTP rules) and requires the server
// to have received every byte (its size and SHA-256 in the answer) and the
// agent running the proxy (agent, on the node of the redirect) to have
// grown by less than proxyBodyRSS at its peak. The peak is the kernel's:
// VmHWM after clearing it (clear_refs 5) just before the upload.
func bigBodyThroughProxy(t *testing.T, client *nettopo.NS, agent Proc, url, what string) {
	t.Helper()
	pid := strconv.Itoa(agent.PID)
	if err := os.WriteFile("/proc/"+pid+"/clear_refs", []byte("5"), 0); err != nil {
		t.Fatalf("%s: reset the agent's peak RSS: %v", what, err)
	}
	before, err := procStatusKB(pid, "VmHWM:")
	if err != nil {
		t.Fatal(err)
	}
	body := &hashingReader{r: io.LimitReader(rand.NewChaCha8([32]byte{7}), bigBody), h: sha256.New()}
	req, err := http.NewRequest("POST", url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = bigBody
	req.Header.Set("X-Token", "s3cret")
	hc := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{Proxy: nil, DialContext: client.DialContext}}
	defer hc.CloseIdleConnections()
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s: POST of %d bytes: %v", what, bigBody, err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	want := fmt.Sprintf("body %d sha256 %x", bigBody, body.h.Sum(nil))
	if resp.StatusCode != 200 || !strings.Contains(string(got), want) {
		t.Errorf("%s: %s %q; want 200 with %q (every byte, in order)", what, resp.Status, got, want)
	}
	peak, err := procStatusKB(pid, "VmHWM:")
	if err != nil {
		t.Fatal(err)
	}
	grew := (peak - before) << 10
	t.Logf("%s: %d MiB through the proxy in %v; the agent's peak RSS grew %d KiB (from %d KiB)", what, bigBody>>20,
		took.Round(time.Millisecond), grew>>10, before)
	if grew >= proxyBodyRSS {
		t.Errorf("%s: the agent's peak RSS grew %d MiB while the proxy forwarded %d MiB, want < %d MiB (the body must stream)",
			what, grew>>20, bigBody>>20, proxyBodyRSS>>20)
	}
}

// hashingReader hashes what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

// procStatusKB reads one "kB" field of /proc/PID/status.
func procStatusKB(pid, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%s/status has no %s", pid, field)
}
