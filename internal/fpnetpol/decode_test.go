package fpnetpol

import (
	"strings"
	"testing"
)

// TestCheckHTTP: what the apiserver lets through (header regexes) but Go
// cannot compile is named by field.
func TestCheckHTTP(t *testing.T) {
	v := "a"
	errs := CheckHTTP("spec.ingress[0].toPorts[0].rules.http", []HTTPRule{
		{Method: "GET", Path: "/ok/.*"},
		{Path: "/a(b", Headers: []HeaderMatch{{Name: "X", Regex: "[z-a]"}, {Name: "Y", Value: &v, Regex: "a"}}},
	})
	var got []string
	for _, e := range errs {
		got = append(got, e.Field)
	}
	want := "spec.ingress[0].toPorts[0].rules.http[1].path spec.ingress[0].toPorts[0].rules.http[1].headers[0].regex spec.ingress[0].toPorts[0].rules.http[1].headers[1]"
	if strings.Join(got, " ") != want {
		t.Errorf("fields %q, want %q", got, want)
	}
}
