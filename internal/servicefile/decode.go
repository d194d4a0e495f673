package servicefile

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// maxProblems bounds how many problems one error lists.
const maxProblems = 50

// Error lists every problem found in a services file, each naming the
// object and field, e.g.
// "services[2] (demo/web): ports[0].port: 70000 is out of range 1-65535".
type Error struct {
	Problems []string
	More     int // problems found beyond those listed
}

func (e *Error) Error() string {
	s := strings.Join(e.Problems, "\n")
	if e.More > 0 {
		s += fmt.Sprintf("\n... and %d more problems", e.More)
	}
	return s
}

// problems collects errors while decoding.
type problems struct {
	list []string
	more int
}

func (p *problems) add(at, field, format string, args ...any) {
	if len(p.list) >= maxProblems {
		p.more++
		return
	}
	msg := fmt.Sprintf(format, args...)
	switch {
	case at != "" && field != "":
		msg = at + ": " + field + ": " + msg
	case at != "" || field != "":
		msg = at + field + ": " + msg
	}
	p.list = append(p.list, msg)
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &Error{Problems: p.list, More: p.more}
}

// object reads the fields of one decoded JSON object. at names the object
// the errors are about ("services[2] (demo/web)"), path the field path
// inside it ("ports[0]"). Fields it was not asked for are errors at done.
type object struct {
	p    *problems
	at   string
	path string
	m    map[string]any
	used map[string]bool
}

// asObject returns v as an object, or nil after reporting it is not one.
func asObject(p *problems, at, path string, v any) *object {
	m, ok := v.(map[string]any)
	if !ok {
		p.add(at, path, "must be an object, not %s", kindOf(v))
		return nil
	}
	return &object{p: p, at: at, path: path, m: m, used: map[string]bool{}}
}

func (o *object) field(name string) string {
	if o.path == "" {
		return name
	}
	return o.path + "." + name
}

func (o *object) errorf(name, format string, args ...any) {
	o.p.add(o.at, o.field(name), format, args...)
}

// get returns the field's value and whether it is present and not null.
func (o *object) get(name string) (any, bool) {
	o.used[name] = true
	v, ok := o.m[name]
	return v, ok && v != nil
}

func (o *object) str(name string) (string, bool) {
	v, ok := o.get(name)
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		o.errorf(name, "must be a string, not %s", kindOf(v))
		return "", false
	}
	return s, true
}

func (o *object) int(name string) (int64, bool) {
	v, ok := o.get(name)
	if !ok {
		return 0, false
	}
	n, isNum := v.(json.Number)
	if !isNum {
		o.errorf(name, "must be an integer, not %s", kindOf(v))
		return 0, false
	}
	i, err := n.Int64()
	if err != nil {
		o.errorf(name, "%s is not an integer", n)
		return 0, false
	}
	return i, true
}

func (o *object) list(name string) ([]any, bool) {
	v, ok := o.get(name)
	if !ok {
		return nil, false
	}
	l, isList := v.([]any)
	if !isList {
		o.errorf(name, "must be a list, not %s", kindOf(v))
		return nil, false
	}
	return l, true
}

// done reports the fields nobody asked for, in name order.
func (o *object) done() {
	var unknown []string
	for name := range o.m {
		if !o.used[name] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		o.errorf(name, "unknown field")
	}
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
