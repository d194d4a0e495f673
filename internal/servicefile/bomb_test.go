package servicefile

import (
	"strings"
	"testing"
	"time"
)

// A billion-laughs document (aliases that expand exponentially) is refused
// quickly instead of eating memory.
func TestAliasBomb(t *testing.T) {
	doc := `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
services: [*h]
`
	start := time.Now()
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	if !strings.Contains(err.Error(), "aliasing") {
		t.Errorf("error does not name the aliasing: %.200s", err)
	}
}
