package fpnetpol

import (
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// Policy is one object of either kind. Namespace is "" for the
// clusterwide kind.
type Policy struct {
	Namespace string
	Name      string
	Spec      Spec
}

// Clusterwide reports whether p is a FastpathClusterwideNetworkPolicy.
func (p *Policy) Clusterwide() bool { return p.Namespace == "" }

// Key names p among all policies: "fnp:ns/name" or "fcnp:name", so that
// neither kind collides with a NetworkPolicy's ns/name.
func (p *Policy) Key() string {
	if p.Clusterwide() {
		return "fcnp:" + p.Name
	}
	return "fnp:" + p.Namespace + "/" + p.Name
}

// Decode reads an object of either kind as the API returns it.
func Decode(u *unstructured.Unstructured) (*Policy, error) {
	p := &Policy{Namespace: u.GetNamespace(), Name: u.GetName()}
	spec, ok := u.Object["spec"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: spec: missing", p.Key())
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &p.Spec); err != nil {
		return nil, fmt.Errorf("%s: spec: %w", p.Key(), err)
	}
	return p, nil
}

// FieldError is a value the apiserver let through that the agent cannot
// use; Field is its path (spec.ingress[0].toPorts[1].rules.http[2].path).
type FieldError struct {
	Field string
	Err   error
}

func (e FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// CompileRegex compiles an anchored RE2 expression of a rule, as the proxy
// will match it (the whole value, not a part of it).
func CompileRegex(expr string) (*regexp.Regexp, error) {
	return regexp.Compile("^(?:" + expr + ")$")
}

// CheckHTTP returns the errors of the rules' regular expressions, each
// naming its field below path (e.g. path = spec.ingress[0].toPorts[0].rules.http).
func CheckHTTP(path string, rules []HTTPRule) []FieldError {
	var out []FieldError
	check := func(f, expr string) {
		if expr == "" {
			return
		}
		if _, err := CompileRegex(expr); err != nil {
			out = append(out, FieldError{Field: f, Err: err})
		}
	}
	for i, r := range rules {
		p := fmt.Sprintf("%s[%d]", path, i)
		check(p+".method", r.Method)
		check(p+".path", r.Path)
		check(p+".host", r.Host)
		for j, h := range r.Headers {
			hp := fmt.Sprintf("%s.headers[%d]", p, j)
			if h.Value != nil && h.Regex != "" {
				out = append(out, FieldError{Field: hp, Err: fmt.Errorf("value and regex both set")})
			}
			check(hp+".regex", h.Regex)
		}
	}
	return out
}
