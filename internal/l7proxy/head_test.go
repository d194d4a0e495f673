package l7proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/": "/", "/a/b": "/a/b", "/a.b/c": "/a.b/c", "/...": "/...", "/a/.well-known/x": "/a/.well-known/x", "*": "*",
		"/adm%69n": "/admin", "/a%7eb": "/a~b", "/a%20b": "/a%20b", "/a%c3%a9": "/a%C3%A9", "//admin": "/admin",
		"/a///b//": "/a/b/", "/%2e%2e%2e": "/...",
		// refused
		"/a/./b": "", "/a/../b": "", "/..": "", "/a/%2e%2E/b": "", "/a/%2E./b": "", "/a/.%2e": "", "/a/%2e": "",
		"/a%5cb": "", "/a%2Fb": "", "/a%2f..": "", `/a\b`: "", "/a%": "", "/a%2": "", "/a%zz": "", "": "", "a": "",
	} {
		got, ok := normalizePath(in)
		if want == "" && ok {
			t.Errorf("normalizePath(%q) = %q, want it refused", in, got)
		}
		if want != "" && (!ok || got != want) {
			t.Errorf("normalizePath(%q) = %q, %v, want %q", in, got, ok, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { normalizePath("/api/v1/items") }); n != 0 {
		t.Errorf("a clean path allocates %v times", n)
	}
}

// FuzzRequestHead checks that the strict head check never panics, and
// that whatever it accepts, net/http parses with the framing the check
// saw: one Content-Length, or chunked, or no body.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n x\r\n\r\n",
		"GET /a/%2e%2e HTTP/1.1\nHost: a\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		end := headEnd(raw, 0)
		if end == 0 {
			return
		}
		head := raw[:end]
		if checkRequestHead(head) != nil {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			return // net/http refuses more; the proxy answers 400
		}
		var cl int64 = 0
		chunked := false
		for _, line := range strings.Split(string(head), "\r\n") {
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.ToLower(name) {
			case "content-length":
				cl, _ = strconv.ParseInt(strings.Trim(value, " \t"), 10, 64)
			case "transfer-encoding":
				chunked = true
			}
		}
		switch {
		case chunked && req.ContentLength != -1:
			t.Fatalf("chunked head parsed with ContentLength %d", req.ContentLength)
		case !chunked && req.ContentLength != cl:
			t.Fatalf("Content-Length %d parsed as %d", cl, req.ContentLength)
		}
		if req.Header["Host"] != nil && len(req.Header["Host"]) != 1 {
			t.Fatal("several Host fields accepted")
		}
		if p := pathOf(req.RequestURI); p != "*" && !strings.HasPrefix(p, "/") {
			t.Fatalf("target %q accepted", req.RequestURI)
		}
	})
}

// FuzzNormalizePath: a normalized path is stable (normalizing it again
// changes nothing), has no dot-segment, and decodes to what the input
// decodes to (net/url's reading), modulo merged slashes.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/a/b", "/adm%69n", "//x//y", "/a/%2e%2e/b", "/%41%2f", "/a%zz", "*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, ok := normalizePath(in)
		if !ok {
			return
		}
		again, ok2 := normalizePath(out)
		if !ok2 || again != out {
			t.Fatalf("normalizePath(%q) = %q, then %q (%v)", in, out, again, ok2)
		}
		if strings.Contains(out, "//") || strings.Contains("/"+out+"/", "/../") || strings.Contains("/"+out+"/", "/./") {
			t.Fatalf("normalizePath(%q) = %q", in, out)
		}
		a, err1 := url.PathUnescape(in)
		b, err2 := url.PathUnescape(out)
		if err1 != nil || err2 != nil {
			t.Fatalf("%q -> %q: unescape %v %v", in, out, err1, err2)
		}
		if mergeSlashes(a) != b {
			t.Fatalf("%q decodes to %q, its normalization %q to %q", in, a, out, b)
		}
	})
}

func mergeSlashes(s string) string {
	for strings.Contains(s, "//") {
		s = strings.ReplaceAll(s, "//", "/")
	}
	return s
}
