package l7proxy

import (
	"bytes"
	"net/http"
	"strings"

	"github.com/fastpath-net/fastpath/internal/l7"
)

// headError is a request refused before it reaches the rules: the status
// sent to the client (which then closes) and the reason for the event.
type headError struct {
	status int
	reason string
}

func (e *headError) Error() string { return e.reason }

func refuse(status int, reason string) *headError { return &headError{status, reason} }

// checkRequestHead validates a raw HTTP/1.x request head (request line
// through the empty line, CRLF included) more strictly than net/http, so
// that the proxy and the server behind it cannot disagree on where a
// request ends (request smuggling, RFC 9112 section 11.2) or what it names:
//
//   - every line ends in CRLF: bare LF and bare CR are refused;
//   - obs-fold (a header line starting with SP/HTAB) is refused;
//   - no whitespace between a header name and its colon; names are tokens;
//     values hold no control characters other than HTAB;
//   - Content-Length is 1*DIGIT; several Content-Length fields must agree
//     (comma lists are refused);
//   - Transfer-Encoding is exactly one field "chunked" (others get 501),
//     never together with Content-Length, never on HTTP/1.0;
//   - HTTP/1.1 carries exactly one Host; HTTP/1.0 at most one;
//   - only HTTP/1.0 and HTTP/1.1 (505 otherwise);
//   - the target is origin-form ("/path?query") or "*" for OPTIONS;
//     absolute-form and CONNECT are refused; no '#' or control characters.
//     The path's meaning is checked after parsing, by normalizePath.
func checkRequestHead(h []byte) *headError {
	first := true
	var clValue []byte
	var nCL, nTE, nHost int
	http10 := false
	for len(h) > 0 {
		i := bytes.IndexByte(h, '\n')
		if i < 1 || h[i-1] != '\r' {
			return refuse(400, "bare LF line ending")
		}
		line := h[:i-1]
		h = h[i+1:]
		if bytes.IndexByte(line, '\r') >= 0 {
			return refuse(400, "bare CR in head")
		}
		if first {
			first = false
			var err *headError
			if http10, err = checkRequestLine(line); err != nil {
				return err
			}
			continue
		}
		if len(line) == 0 {
			if len(h) != 0 {
				return refuse(400, "data after the end of the head")
			}
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return refuse(400, "obs-fold header line")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return refuse(400, "header line without a name and colon")
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !l7.IsTokenChar(c) {
				return refuse(400, "invalid character in header name")
			}
		}
		for _, c := range value {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return refuse(400, "control character in header value")
			}
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if len(value) == 0 || len(value) > 18 || !allDigits(value) {
				return refuse(400, "invalid Content-Length")
			}
			if nCL > 0 && !bytes.Equal(value, clValue) {
				return refuse(400, "multiple differing Content-Length")
			}
			clValue = value
			nCL++
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			nTE++
			if nTE > 1 {
				return refuse(400, "multiple Transfer-Encoding fields")
			}
			if !bytes.EqualFold(value, []byte("chunked")) {
				return refuse(501, "unsupported Transfer-Encoding")
			}
		case bytes.EqualFold(name, []byte("Host")):
			nHost++
			if !validHost(value) {
				return refuse(400, "invalid Host")
			}
		}
	}
	switch {
	case nTE > 0 && nCL > 0:
		return refuse(400, "both Content-Length and Transfer-Encoding")
	case nTE > 0 && http10:
		return refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
	case nHost > 1:
		return refuse(400, "multiple Host fields")
	case nHost == 0 && !http10:
		return refuse(400, "missing Host")
	}
	return nil
}

// checkRequestLine checks "METHOD SP target SP HTTP/1.x" and reports
// whether the version is 1.0.
func checkRequestLine(line []byte) (http10 bool, err *headError) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return false, refuse(400, "malformed request line")
	}
	method, rest := line[:sp1], line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return false, refuse(400, "malformed request line")
	}
	target, version := rest[:sp2], rest[sp2+1:]
	for _, c := range method {
		if !l7.IsTokenChar(c) {
			return false, refuse(400, "invalid method")
		}
	}
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		http10 = true
	default:
		if bytes.IndexByte(version, ' ') >= 0 {
			return false, refuse(400, "malformed request line")
		}
		return false, refuse(505, "unsupported HTTP version")
	}
	if string(target) == "*" {
		if string(method) != http.MethodOptions {
			return false, refuse(400, "asterisk-form target with a method other than OPTIONS")
		}
		return http10, nil
	}
	if target[0] != '/' {
		return false, refuse(400, "only origin-form request targets are accepted")
	}
	for _, c := range target {
		if c <= 0x20 || c >= 0x7f || c == '\\' || c == '#' {
			return false, refuse(400, "invalid character in request target")
		}
	}
	return http10, nil
}

// pathOf is the path of an origin-form target: up to the query.
func pathOf[T string | []byte](target T) T {
	for i := 0; i < len(target); i++ {
		if target[i] == '?' {
			return target[:i]
		}
	}
	return target
}

// normalizePath returns the path that the rules judge and that the server
// then receives, so that both see the same one (RFC 3986 6.2.2):
// percent-encoded unreserved characters are decoded ("/adm%69n" is
// "/admin"), other percent-encodings get upper-case hex, and runs of '/'
// merge into one. It refuses (false) what a server may read as another
// path than the rules did: "." and ".." segments (also encoded), encoded
// '/' and '\' (%2F, %5C), a raw '\', and broken percent-encodings.
// "*" (OPTIONS) passes as it is. A path needing no change is returned
// without allocating.
func normalizePath(path string) (string, bool) {
	if path == "*" {
		return path, true
	}
	if path == "" || path[0] != '/' {
		return "", false
	}
	if !strings.Contains(path, "%") && !strings.Contains(path, "//") {
		return path, cleanPath(path)
	}
	var b strings.Builder
	b.Grow(len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '%':
			if i+2 >= len(path) || unhex(path[i+1]) < 0 || unhex(path[i+2]) < 0 {
				return "", false
			}
			d := byte(unhex(path[i+1])<<4 | unhex(path[i+2]))
			switch {
			case d == '/' || d == '\\':
				return "", false
			case isUnreserved(d):
				b.WriteByte(d)
			default:
				b.WriteByte('%')
				b.WriteByte(upperHex[d>>4])
				b.WriteByte(upperHex[d&15])
			}
			i += 2
		case c == '/' && i > 0 && path[i-1] == '/':
			// merged
		default:
			b.WriteByte(c)
		}
	}
	out := b.String()
	return out, cleanPath(out)
}

const upperHex = "0123456789ABCDEF"

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// cleanPath reports whether a normalized path has no "." or ".." segment
// and no backslash.
func cleanPath(path string) bool {
	if strings.IndexByte(path, '\\') >= 0 {
		return false
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validHost accepts reg-name, IPv4 and bracketed IPv6 with an optional
// port: the characters of RFC 3986's host and port.
func validHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:[]%", c) >= 0:
		default:
			return false
		}
	}
	return true
}
