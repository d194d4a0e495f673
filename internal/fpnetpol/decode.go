package fpnetpol

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fastpath-net/fastpath/internal/l7"
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

// L7 is the rule as the proxy's matcher (internal/l7) takes it. A header
// with an empty Value is matched by presence, as one without.
func (r HTTPRule) L7() l7.HTTPRule {
	out := l7.HTTPRule{Method: r.Method, Path: r.Path, Host: r.Host}
	for _, h := range r.Headers {
		m := l7.HeaderMatch{Name: h.Name, Regex: h.Regex}
		if h.Value != nil {
			m.Value = *h.Value
		}
		out.Headers = append(out.Headers, m)
	}
	return out
}

// CheckHTTP returns what the proxy's matcher would refuse in rules (a
// regular expression that does not compile, a bad header name, value and
// regex both set), each naming its field below path (e.g. path =
// spec.ingress[0].toPorts[0].rules.http).
func CheckHTTP(path string, rules []HTTPRule) []FieldError {
	var out []FieldError
	for i, r := range rules {
		p := fmt.Sprintf("%s[%d]", path, i)
		err := r.L7().Validate()
		if err == nil {
			continue
		}
		var errs []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		} else {
			errs = []error{err}
		}
		for _, e := range errs {
			var fe *l7.FieldError
			if errors.As(e, &fe) {
				out = append(out, FieldError{Field: p + "." + fe.Field, Err: fe.Err})
			} else {
				out = append(out, FieldError{Field: p, Err: e})
			}
		}
	}
	return out
}
