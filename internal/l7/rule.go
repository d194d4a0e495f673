// Package l7 is the rule model of L7 (HTTP) policy and its matcher. It does
// no I/O: the proxy (internal/l7proxy) parses requests and asks a Compiled
// rule set for a Verdict; the CRD layer uses Validate for its error messages.
//
// Semantics (issue 6):
//   - A request is allowed when at least one Allow rule matches and no Deny
//     rule matches. Deny rules win over allows; no match means denied.
//   - An empty Allow list allows nothing. "Everything except the denies" is
//     written as one Allow rule with every field empty, which matches any
//     request; the CRD layer synthesises it when a policy has only denies.
//   - Within one HTTPRule every non-empty field must match (AND).
//   - Method, Path and Host are regular expressions (Go RE2 syntax, linear
//     time) anchored as ^(?:expr)$: "/api/v1/.*" matches "/api/v1/x" but not
//     "/x/api/v1/". The expression must parse on its own before anchoring, so
//     "a)|(b" cannot escape the anchors. Empty means any.
//   - Method is case-sensitive (methods are, RFC 9110 9.1). Host is matched
//     case-insensitively against the Host header (:authority in HTTP/2)
//     without its port ("api.example:8080" is matched as "api.example",
//     "[::1]:80" as "::1"). Path is the request target's path without the
//     query string, normalized by the proxy before it asks (and forwarded
//     as normalized): percent-encoded unreserved characters decoded, other
//     percent-encodings in upper-case hex, runs of '/' merged; paths with
//     dot-segments or encoded slashes never reach the rules (see
//     internal/l7proxy). Write rules against plain paths: "/admin/.*".
//   - A HeaderMatch matches when the header is present (Value and Regex
//     empty), or when any of its values equals Value exactly, or when any of
//     its values matches Regex (anchored as above). Header names are
//     case-insensitive.
package l7

import (
	"errors"
	"fmt"
	"net/textproto"
	"regexp"
	"regexp/syntax"
	"strings"
)

// MaxRegexLen bounds a single expression; RE2 is linear in input, but the
// compiled program grows with the expression.
const MaxRegexLen = 1024

// HTTPRule matches one HTTP request. Empty fields match anything.
type HTTPRule struct {
	Method  string        // anchored regex over the method, e.g. "GET|HEAD"
	Path    string        // anchored regex over the path, e.g. "/api/v1/.*"
	Host    string        // anchored regex over the host, case-insensitive
	Headers []HeaderMatch // all must match
}

// HeaderMatch is one header condition: presence (Value and Regex empty), an
// exact value, or an anchored regex over the value. Value and Regex are
// exclusive.
type HeaderMatch struct {
	Name  string
	Value string
	Regex string
}

// NamedRule carries the name that verdicts and access-log events report,
// e.g. "ns/policy ingress[0].toPorts[0].rules.http[1]".
type NamedRule struct {
	Name string
	Rule HTTPRule
}

// RuleSet is the L7 part of the policy for one endpoint, direction and port.
type RuleSet struct {
	Allow []NamedRule
	Deny  []NamedRule
}

// Request is what a rule looks at. Header keys are in canonical form
// (textproto.CanonicalMIMEHeaderKey), as net/http's http.Header has them;
// an http.Header converts to this type without a copy.
type Request struct {
	Method string
	Path   string
	Host   string
	Header map[string][]string
}

// Verdict is the decision on one request. Rule names the deciding rule
// (the matching deny rule, or the first matching allow rule); it is empty
// when no rule matched.
type Verdict struct {
	Allowed bool
	Rule    string
	Reason  string
}

// Reasons reported in Verdict.Reason.
const (
	ReasonAllowed = "matched allow rule"
	ReasonDenied  = "matched deny rule"
	ReasonNoMatch = "no allow rule matched"
)

// FieldError names the rule and the field that is wrong, so that the CRD
// layer can prefix its own path: Field is relative to the HTTPRule
// ("path", "headers[1].regex").
type FieldError struct {
	Rule  string // NamedRule.Name, or "allow[i]"/"deny[i]" when unnamed
	Field string
	Value string
	Err   error
}

func (e *FieldError) Error() string {
	if e.Rule == "" {
		return fmt.Sprintf("%s %q: %v", e.Field, e.Value, e.Err)
	}
	return fmt.Sprintf("%s: %s %q: %v", e.Rule, e.Field, e.Value, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// Compiled is an immutable, compiled RuleSet; Decide is safe for concurrent
// use and does not allocate.
type Compiled struct {
	allow []compiledRule
	deny  []compiledRule
}

type compiledRule struct {
	name    string
	method  *regexp.Regexp
	path    *regexp.Regexp
	host    *regexp.Regexp
	headers []compiledHeader
}

type compiledHeader struct {
	name  string // canonical
	value string
	exact bool
	regex *regexp.Regexp
}

// Validate checks one rule and returns every problem found, each a
// *FieldError with Rule empty (joined with errors.Join), or nil.
func (r HTTPRule) Validate() error {
	_, err := compileRule("", r)
	return err
}

// Validate checks a whole rule set; errors name the rule and the field.
func Validate(rs RuleSet) error {
	_, err := Compile(rs)
	return err
}

// Compile checks and compiles rs. The error joins one *FieldError per
// problem found.
func Compile(rs RuleSet) (*Compiled, error) {
	c := &Compiled{}
	var errs []error
	for i, nr := range rs.Allow {
		cr, err := compileRule(ruleName(nr.Name, "allow", i), nr.Rule)
		errs = append(errs, err)
		c.allow = append(c.allow, cr)
	}
	for i, nr := range rs.Deny {
		cr, err := compileRule(ruleName(nr.Name, "deny", i), nr.Rule)
		errs = append(errs, err)
		c.deny = append(c.deny, cr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func ruleName(name, list string, i int) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("%s[%d]", list, i)
}

func compileRule(name string, r HTTPRule) (compiledRule, error) {
	cr := compiledRule{name: name}
	var errs []error
	fail := func(field, value string, err error) {
		errs = append(errs, &FieldError{Rule: name, Field: field, Value: value, Err: err})
	}
	var err error
	if cr.method, err = anchored(r.Method, false); err != nil {
		fail("method", r.Method, err)
	}
	if cr.path, err = anchored(r.Path, false); err != nil {
		fail("path", r.Path, err)
	}
	if cr.host, err = anchored(r.Host, true); err != nil {
		fail("host", r.Host, err)
	}
	for i, h := range r.Headers {
		field := fmt.Sprintf("headers[%d]", i)
		if err := checkHeaderName(h.Name); err != nil {
			fail(field+".name", h.Name, err)
		}
		ch := compiledHeader{name: textproto.CanonicalMIMEHeaderKey(h.Name)}
		switch {
		case h.Value != "" && h.Regex != "":
			fail(field, h.Name, errors.New("value and regex are exclusive"))
		case h.Value != "":
			if strings.ContainsAny(h.Value, "\r\n\x00") {
				fail(field+".value", h.Value, errors.New("must not contain CR, LF or NUL"))
			}
			ch.value, ch.exact = h.Value, true
		case h.Regex != "":
			if ch.regex, err = anchored(h.Regex, false); err != nil {
				fail(field+".regex", h.Regex, err)
			}
		}
		cr.headers = append(cr.headers, ch)
	}
	return cr, errors.Join(errs...)
}

// anchored compiles expr as ^(?:expr)$. The expression is parsed alone
// first: only a balanced expression can be wrapped without escaping the
// anchors.
func anchored(expr string, foldCase bool) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	if len(expr) > MaxRegexLen {
		return nil, fmt.Errorf("longer than %d characters", MaxRegexLen)
	}
	if _, err := syntax.Parse(expr, syntax.Perl); err != nil {
		return nil, fmt.Errorf("invalid regular expression: %w", err)
	}
	prefix := "^(?:"
	if foldCase {
		prefix = "(?i)^(?:"
	}
	re, err := regexp.Compile(prefix + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression: %w", err)
	}
	return re, nil
}

// checkHeaderName accepts an RFC 9110 token.
func checkHeaderName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	for i := 0; i < len(name); i++ {
		if !IsTokenChar(name[i]) {
			return fmt.Errorf("invalid character %q in header name", name[i])
		}
	}
	return nil
}

// IsTokenChar reports whether c may appear in an RFC 9110 token (header
// names, methods).
func IsTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Decide applies the rule set to req. A nil *Compiled denies everything.
func (c *Compiled) Decide(req *Request) Verdict {
	if c == nil {
		return Verdict{Reason: ReasonNoMatch}
	}
	host := HostWithoutPort(req.Host)
	for i := range c.deny {
		if c.deny[i].match(req, host) {
			return Verdict{Rule: c.deny[i].name, Reason: ReasonDenied}
		}
	}
	for i := range c.allow {
		if c.allow[i].match(req, host) {
			return Verdict{Allowed: true, Rule: c.allow[i].name, Reason: ReasonAllowed}
		}
	}
	return Verdict{Reason: ReasonNoMatch}
}

// Len reports the number of allow and deny rules.
func (c *Compiled) Len() (allow, deny int) {
	if c == nil {
		return 0, 0
	}
	return len(c.allow), len(c.deny)
}

func (r *compiledRule) match(req *Request, host string) bool {
	if r.method != nil && !r.method.MatchString(req.Method) {
		return false
	}
	if r.path != nil && !r.path.MatchString(req.Path) {
		return false
	}
	if r.host != nil && !r.host.MatchString(host) {
		return false
	}
	for i := range r.headers {
		if !r.headers[i].match(req.Header[r.headers[i].name]) {
			return false
		}
	}
	return true
}

func (h *compiledHeader) match(values []string) bool {
	if len(values) == 0 {
		return false
	}
	if !h.exact && h.regex == nil {
		return true
	}
	for _, v := range values {
		if h.exact && v == h.value || h.regex != nil && h.regex.MatchString(v) {
			return true
		}
	}
	return false
}

// HostWithoutPort strips an optional port and the brackets of an IPv6
// literal: "a.example:80" -> "a.example", "[::1]:80" -> "::1". It does not
// allocate.
func HostWithoutPort(hostport string) string {
	if strings.HasPrefix(hostport, "[") {
		if end := strings.IndexByte(hostport, ']'); end > 0 {
			return hostport[1:end]
		}
		return hostport
	}
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && strings.IndexByte(hostport[:i], ':') < 0 {
		return hostport[:i]
	}
	return hostport
}
