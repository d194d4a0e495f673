package l7

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	rs := RuleSet{
		Allow: []NamedRule{
			{Name: "public", Rule: HTTPRule{Method: "GET|HEAD", Path: "/public(/.*)?"}},
			{Name: "token", Rule: HTTPRule{Path: "/admin/.*", Headers: []HeaderMatch{{Name: "x-token", Value: "s3cret"}}}},
			{Name: "api", Rule: HTTPRule{Method: "GET", Host: "api\\.example", Path: "/v1/.*"}},
			{Name: "debug-present", Rule: HTTPRule{Path: "/debug", Headers: []HeaderMatch{{Name: "X-Debug"}}}},
			{Name: "version-regex", Rule: HTTPRule{Path: "/ver", Headers: []HeaderMatch{{Name: "X-Ver", Regex: "v[0-9]+"}}}},
		},
		Deny: []NamedRule{
			{Name: "no-secret", Rule: HTTPRule{Path: "/public/secret.*"}},
		},
	}
	c, err := Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	h := func(kv ...string) map[string][]string {
		m := map[string][]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = append(m[kv[i]], kv[i+1])
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		req     Request
		allowed bool
		rule    string
	}{
		{"get public", Request{Method: "GET", Path: "/public"}, true, "public"},
		{"get public sub", Request{Method: "GET", Path: "/public/a"}, true, "public"},
		{"anchored path", Request{Method: "GET", Path: "/x/public"}, false, ""},
		{"anchored method", Request{Method: "GETX", Path: "/public"}, false, ""},
		{"method case", Request{Method: "get", Path: "/public"}, false, ""},
		{"post public", Request{Method: "POST", Path: "/public"}, false, ""},
		{"deny wins", Request{Method: "GET", Path: "/public/secret/x"}, false, "no-secret"},
		{"token ok", Request{Method: "POST", Path: "/admin/x", Header: h("X-Token", "s3cret")}, true, "token"},
		{"token second value", Request{Method: "POST", Path: "/admin/x", Header: h("X-Token", "no", "X-Token", "s3cret")}, true, "token"},
		{"token wrong", Request{Method: "POST", Path: "/admin/x", Header: h("X-Token", "s3cret2")}, false, ""},
		{"token missing", Request{Method: "POST", Path: "/admin/x"}, false, ""},
		{"host", Request{Method: "GET", Host: "api.example", Path: "/v1/a"}, true, "api"},
		{"host port case", Request{Method: "GET", Host: "API.Example:8080", Path: "/v1/a"}, true, "api"},
		{"host anchored", Request{Method: "GET", Host: "xapi.example", Path: "/v1/a"}, false, ""},
		{"host suffix", Request{Method: "GET", Host: "api.example.evil", Path: "/v1/a"}, false, ""},
		{"presence", Request{Method: "PUT", Path: "/debug", Header: h("X-Debug", "")}, true, "debug-present"},
		{"presence missing", Request{Method: "PUT", Path: "/debug"}, false, ""},
		{"header regex", Request{Method: "PUT", Path: "/ver", Header: h("X-Ver", "v12")}, true, "version-regex"},
		{"header regex anchored", Request{Method: "PUT", Path: "/ver", Header: h("X-Ver", "v12x")}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := c.Decide(&tc.req)
			if v.Allowed != tc.allowed || v.Rule != tc.rule {
				t.Fatalf("Decide = %+v, want allowed=%v rule=%q", v, tc.allowed, tc.rule)
			}
			if v.Reason == "" {
				t.Fatal("empty reason")
			}
		})
	}
}

func TestEmptyAllowDeniesAndAllowAll(t *testing.T) {
	onlyDeny, err := Compile(RuleSet{Deny: []NamedRule{{Rule: HTTPRule{Path: "/x"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if v := onlyDeny.Decide(&Request{Method: "GET", Path: "/y"}); v.Allowed || v.Reason != ReasonNoMatch {
		t.Fatalf("only deny rules: %+v, want denied (no allow rule)", v)
	}
	allowAll, err := Compile(RuleSet{Allow: []NamedRule{{}}, Deny: []NamedRule{{Rule: HTTPRule{Path: "/x"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if v := allowAll.Decide(&Request{Method: "GET", Path: "/y"}); !v.Allowed || v.Rule != "allow[0]" {
		t.Fatalf("allow-all: %+v", v)
	}
	if v := allowAll.Decide(&Request{Method: "GET", Path: "/x"}); v.Allowed || v.Rule != "deny[0]" {
		t.Fatalf("allow-all + deny: %+v", v)
	}
	var nilc *Compiled
	if v := nilc.Decide(&Request{}); v.Allowed {
		t.Fatal("nil rule set allowed")
	}
}

func TestCompileErrorsNameField(t *testing.T) {
	for _, tc := range []struct {
		rule  HTTPRule
		field string
	}{
		{HTTPRule{Path: "("}, "path"},
		{HTTPRule{Method: "a)|(b"}, "method"},
		{HTTPRule{Host: "[z-a]"}, "host"},
		{HTTPRule{Path: strings.Repeat("a", MaxRegexLen+1)}, "path"},
		{HTTPRule{Headers: []HeaderMatch{{Name: ""}}}, "headers[0].name"},
		{HTTPRule{Headers: []HeaderMatch{{Name: "X-Ok"}, {Name: "bad name"}}}, "headers[1].name"},
		{HTTPRule{Headers: []HeaderMatch{{Name: "X", Value: "a", Regex: "b"}}}, "headers[0]"},
		{HTTPRule{Headers: []HeaderMatch{{Name: "X", Value: "a\r\nb"}}}, "headers[0].value"},
		{HTTPRule{Headers: []HeaderMatch{{Name: "X", Regex: "*"}}}, "headers[0].regex"},
	} {
		_, err := Compile(RuleSet{Deny: []NamedRule{{Name: "ns/p rule", Rule: tc.rule}}})
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("%+v: error %v is not a *FieldError", tc.rule, err)
		}
		if fe.Field != tc.field || fe.Rule != "ns/p rule" {
			t.Errorf("%+v: field %q rule %q, want %q", tc.rule, fe.Field, fe.Rule, tc.field)
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("message %q does not name %q", err, tc.field)
		}
		if tc.rule.Validate() == nil || Validate(RuleSet{Allow: []NamedRule{{Rule: tc.rule}}}) == nil {
			t.Errorf("%+v: Validate accepted it", tc.rule)
		}
	}
	// Two bad fields, two errors.
	err := Validate(RuleSet{Allow: []NamedRule{{Rule: HTTPRule{Path: "(", Host: "("}}}})
	if !strings.Contains(err.Error(), "allow[0]: path") || !strings.Contains(err.Error(), "allow[0]: host") {
		t.Fatalf("error %q does not report both fields", err)
	}
}

func TestHostWithoutPort(t *testing.T) {
	for in, want := range map[string]string{
		"a.example": "a.example", "a.example:80": "a.example", "[::1]:80": "::1",
		"[::1]": "::1", "::1": "::1", "": "", "[bad": "[bad", "1.2.3.4:5": "1.2.3.4",
	} {
		if got := HostWithoutPort(in); got != want {
			t.Errorf("HostWithoutPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	c, err := Compile(RuleSet{
		Allow: []NamedRule{{Rule: HTTPRule{Method: "GET", Path: "/api/v[0-9]+/.*", Host: "a\\.example", Headers: []HeaderMatch{{Name: "X-Token", Regex: "[a-z]+"}}}}},
		Deny:  []NamedRule{{Rule: HTTPRule{Path: "/api/v1/admin.*"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{Method: "GET", Path: "/api/v2/items", Host: "a.example:80", Header: map[string][]string{"X-Token": {"abc"}}}
	if n := testing.AllocsPerRun(100, func() { c.Decide(req) }); n != 0 {
		t.Fatalf("Decide allocates %v times", n)
	}
}

func BenchmarkDecide(b *testing.B) {
	c, _ := Compile(RuleSet{
		Allow: []NamedRule{{Rule: HTTPRule{Method: "GET", Path: "/public/.*"}}, {Rule: HTTPRule{Path: "/api/v[0-9]+/.*", Headers: []HeaderMatch{{Name: "X-Token", Value: "t"}}}}},
		Deny:  []NamedRule{{Rule: HTTPRule{Path: "/api/v1/admin.*"}}},
	})
	req := &Request{Method: "POST", Path: "/api/v2/items", Header: map[string][]string{"X-Token": {"t"}}}
	for b.Loop() {
		c.Decide(req)
	}
}

func FuzzCompileDecide(f *testing.F) {
	f.Add("GET", "/a/.*", "h\\.x", "X-A", "", "v.*", "GET", "/a/b", "h.x:1", "v1")
	f.Add("(", ")", "[", "bad name", "v", "", "", "", "[::1]", "")
	f.Fuzz(func(t *testing.T, method, path, host, hname, hvalue, hregex, rmethod, rpath, rhost, rhval string) {
		rule := HTTPRule{Method: method, Path: path, Host: host, Headers: []HeaderMatch{{Name: hname, Value: hvalue, Regex: hregex}}}
		c, err := Compile(RuleSet{Allow: []NamedRule{{Rule: rule}}, Deny: []NamedRule{{Rule: HTTPRule{Path: regexp.QuoteMeta(rpath)}}}})
		if err != nil {
			if c != nil {
				t.Fatal("Compile returned a rule set and an error")
			}
			return
		}
		req := &Request{Method: rmethod, Path: rpath, Host: rhost, Header: map[string][]string{hname: {rhval}}}
		v := c.Decide(req)
		if v.Allowed {
			t.Fatalf("allowed although the deny rule matches path %q exactly", rpath)
		}
	})
}
