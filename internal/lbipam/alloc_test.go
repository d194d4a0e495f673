package lbipam

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

func block(t *testing.T, s string) Block {
	t.Helper()
	var b Block
	var err error
	if from, to, ok := strings.Cut(s, "-"); ok {
		b, err = parseBlock("", from, to)
	} else {
		b, err = parseBlock(s, "", "")
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pool(t *testing.T, name string, age int, sel string, blocks ...string) *Pool {
	t.Helper()
	s, err := labels.Parse(sel)
	if err != nil {
		t.Fatal(err)
	}
	p := &Pool{Name: name, Selector: s, Created: time.Unix(int64(age), 0)}
	for _, b := range blocks {
		p.Blocks = append(p.Blocks, block(t, b))
	}
	return p
}

func svc(key string, ports ...int32) Request {
	ns, name, _ := strings.Cut(key, "/")
	r := Request{Key: key, Namespace: ns, Labels: labels.Set{namespaceLabel: ns, nameLabel: name}}
	for _, p := range ports {
		r.Ports = append(r.Ports, PortKey{"TCP", p})
	}
	return r
}

func with(r Request, f func(*Request)) Request { f(&r); return r }

// step is one call on the allocator and what it must answer.
type step struct {
	req     Request
	release bool   // Release(req.Key) instead of Ensure
	want    string // the address, or the Reason of the error
}

func TestAllocator(t *testing.T) {
	for _, c := range []struct {
		name  string
		pools func(t *testing.T) []*Pool
		steps []step
	}{
		{"range then cidr, lowest first, exhaustion, release", func(t *testing.T) []*Pool {
			return []*Pool{pool(t, "a", 1, "", "10.0.0.1-10.0.0.2", "10.0.1.0/31")}
		}, []step{
			{req: svc("x/a"), want: "10.0.0.1"},
			{req: svc("x/b"), want: "10.0.0.2"},
			{req: svc("x/c"), want: "10.0.1.0"},
			{req: svc("x/a"), want: "10.0.0.1"}, // stable
			{req: svc("x/d"), want: "10.0.1.1"},
			{req: svc("x/e"), want: string(ReasonExhausted)},
			{req: svc("x/b"), release: true},
			{req: svc("x/e"), want: "10.0.0.2"},
		}},
		{"selector and namespace label", func(t *testing.T) []*Pool {
			return []*Pool{
				pool(t, "red", 1, "color=red", "10.1.0.0/30"),
				pool(t, "ns", 2, namespaceLabel+"=blue", "10.2.0.0/30"),
			}
		}, []step{
			{req: with(svc("x/a"), func(r *Request) { r.Labels["color"] = "red" }), want: "10.1.0.0"},
			{req: svc("blue/a"), want: "10.2.0.0"},
			{req: svc("x/b"), want: string(ReasonNoPool)},
			{req: with(svc("x/v6"), func(r *Request) { r.IPv6 = true; r.Labels["color"] = "red" }), want: string(ReasonNoPool)},
		}},
		{"requested address", func(t *testing.T) []*Pool {
			return []*Pool{pool(t, "a", 1, "", "10.0.0.0/29")}
		}, []step{
			{req: with(svc("x/a"), func(r *Request) { r.Requested = netip.MustParseAddr("10.0.0.5") }), want: "10.0.0.5"},
			{req: with(svc("x/b"), func(r *Request) { r.Requested = netip.MustParseAddr("10.0.0.5") }), want: string(ReasonInUse)},
			{req: with(svc("x/c"), func(r *Request) { r.Requested = netip.MustParseAddr("192.0.2.1") }), want: string(ReasonNotInPool)},
			{req: with(svc("x/d"), func(r *Request) { r.Requested = netip.MustParseAddr("2001:db8::1") }), want: string(ReasonBadRequest)},
			// a changes its request: it moves, and 10.0.0.5 is free again
			{req: with(svc("x/a"), func(r *Request) { r.Requested = netip.MustParseAddr("10.0.0.6") }), want: "10.0.0.6"},
			{req: with(svc("x/b"), func(r *Request) { r.Requested = netip.MustParseAddr("10.0.0.5") }), want: "10.0.0.5"},
			{req: svc("x/e"), want: "10.0.0.0"},
		}},
		{"sharing: same key and namespace, distinct ports", func(t *testing.T) []*Pool {
			return []*Pool{pool(t, "a", 1, "", "10.0.0.0/30")}
		}, []step{
			{req: with(svc("x/web", 80), func(r *Request) { r.SharingKey = "k" }), want: "10.0.0.0"},
			{req: with(svc("x/dns", 53), func(r *Request) { r.SharingKey = "k" }), want: "10.0.0.0"},
			{req: with(svc("x/web2", 80), func(r *Request) { r.SharingKey = "k" }), want: "10.0.0.1"}, // port clash: own address
			{req: with(svc("y/ssh", 22), func(r *Request) { r.SharingKey = "k" }), want: "10.0.0.2"},  // other namespace
			{req: with(svc("x/plain", 22), func(r *Request) { r.Requested = netip.MustParseAddr("10.0.0.0") }), want: string(ReasonInUse)},
			{req: with(svc("x/clash", 53), func(r *Request) {
				r.SharingKey, r.Requested = "k", netip.MustParseAddr("10.0.0.0")
			}), want: string(ReasonInUse)},
			// dns adds port 80: it clashes with web and must move
			{req: with(svc("x/dns", 53, 80), func(r *Request) { r.SharingKey = "k" }), want: "10.0.0.3"},
		}},
		{"disabled pool and overlap", func(t *testing.T) []*Pool {
			off := pool(t, "off", 1, "", "10.9.0.0/24")
			off.Disabled = true
			return []*Pool{off, pool(t, "old", 2, "", "10.0.0.0/31"), pool(t, "new", 3, "", "10.0.0.1-10.0.0.9")}
		}, []step{
			{req: svc("x/a"), want: "10.0.0.0"},
			{req: svc("x/b"), want: "10.0.0.1"},
			{req: svc("x/c"), want: string(ReasonExhausted)}, // "new" overlaps "old": unused
			{req: with(svc("x/d"), func(r *Request) { r.Requested = netip.MustParseAddr("10.9.0.1") }), want: string(ReasonNotInPool)},
		}},
		{"ipv6 block of 2^64 without walking it", func(t *testing.T) []*Pool {
			return []*Pool{pool(t, "v6", 1, "", "2001:db8::/64")}
		}, []step{
			{req: with(svc("x/a"), func(r *Request) { r.IPv6 = true }), want: "2001:db8::"},
			{req: with(svc("x/b"), func(r *Request) { r.IPv6 = true }), want: "2001:db8::1"},
			{req: svc("x/v4"), want: string(ReasonNoPool)},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := NewAllocator()
			a.SetPools(c.pools(t))
			for i, s := range c.steps {
				if s.release {
					a.Release(s.req.Key)
					continue
				}
				ip, err := a.Ensure(s.req, netip.Addr{})
				got := ip.String()
				if err != nil {
					got = string(err.Reason)
				}
				if got != s.want {
					t.Fatalf("step %d %s: got %s (%v), want %s", i, s.req.Key, got, err, s.want)
				}
			}
		})
	}
}

// TestAdopt: a restarted allocator takes the addresses of the statuses,
// oldest first; a duplicate loses, and a later Ensure never hands an
// adopted address to someone else.
func TestAdopt(t *testing.T) {
	a := NewAllocator()
	a.SetPools([]*Pool{pool(t, "a", 1, "", "10.0.0.0/30")})
	ip := netip.MustParseAddr
	if !a.Adopt(svc("x/old"), ip("10.0.0.2")) {
		t.Fatal("x/old could not adopt its address")
	}
	if a.Adopt(svc("x/dup"), ip("10.0.0.2")) {
		t.Fatal("x/dup adopted an address x/old holds")
	}
	if a.Adopt(svc("x/out"), ip("192.0.2.1")) {
		t.Fatal("adopted an address outside every pool")
	}
	a.SetForeign("y/metallb", []netip.Addr{ip("10.0.0.0")})
	for _, want := range []string{"10.0.0.1", "10.0.0.3", string(ReasonExhausted)} {
		got, err := a.Ensure(svc("x/new-"+want), netip.Addr{})
		if err != nil {
			if string(err.Reason) != want {
				t.Fatalf("got %v, want %s", err, want)
			}
			continue
		}
		if got.String() != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	if used, avail := a.Usage(a.pools[0]); used != 4 || avail.Int64() != 0 {
		t.Errorf("usage = %d used, %s available; want 4, 0", used, avail)
	}
}

func TestParseBlock(t *testing.T) {
	for _, c := range []struct{ cidr, start, stop, want string }{
		{"10.0.0.0/24", "", "", "10.0.0.0-10.0.0.255"},
		{"2001:db8::/126", "", "", "2001:db8::-2001:db8::3"},
		{"", "10.0.0.9", "10.0.0.9", "10.0.0.9-10.0.0.9"},
		{"10.0.0.1/24", "", "", "cidr:"},
		{"10.0.0.0/24", "10.0.0.1", "", "cidr:"},
		{"", "10.0.0.9", "10.0.0.1", "stop: 10.0.0.1 is lower"},
		{"", "2001:db8::9", "2001:db8::1", "stop: 2001:db8::1 is lower"},
		{"", "10.0.0.1", "2001:db8::1", "same IP family"},
		{"", "::ffff:10.0.0.1", "10.0.0.2", "start:"},
		{"", "10.0.0.1", "x", "stop:"},
		{"127.0.0.0/8", "", "", "cidr: 127.0.0.0/8 is not a routable"},
		{"", "169.254.0.1", "169.254.0.9", "start: 169.254.0.1 is not a routable"},
		{"", "126.255.255.255", "128.0.0.0", "stop: the range 126.255.255.255-128.0.0.0 contains 127.0.0.0/8"},
		{"64.0.0.0/2", "", "", "cidr: 64.0.0.0/2 contains 127.0.0.0/8"},
		{"", "2001:db8::1", "ff02::1", "stop: ff02::1 is not a routable"},
		{"", "10.0.0.1", "255.255.255.255", "stop: 255.255.255.255 is not"},
	} {
		b, err := parseBlock(c.cidr, c.start, c.stop)
		got := b.From.String() + "-" + b.To.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.HasPrefix(got, c.want) && !strings.Contains(got, c.want) {
			t.Errorf("parseBlock(%q, %q, %q) = %s, want %s", c.cidr, c.start, c.stop, got, c.want)
		}
	}
}
