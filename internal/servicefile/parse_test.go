package servicefile

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

func l4(addr string, port uint16, proto lb.Proto) lb.L4Addr {
	return lb.L4Addr{Addr: netip.MustParseAddr(addr), Port: port, Proto: proto}
}

func TestParseValid(t *testing.T) {
	data, err := os.ReadFile("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	// The terminating backend is left out while an active one exists.
	bes := []lb.Backend{{L4Addr: l4("10.0.1.2", 8080, lb.TCP)}}
	want := []lb.Service{{
		Name: lb.ServiceName{Namespace: "demo", Name: "web"},
		Frontends: []lb.FrontendSpec{
			{Frontend: lb.Frontend{L4Addr: l4("10.96.0.10", 80, lb.TCP), Type: lb.ClusterIP}, Backends: bes, AffinityTimeout: 3 * time.Hour},
			{Frontend: lb.Frontend{L4Addr: l4("192.0.2.10", 80, lb.TCP), Type: lb.ExternalIP}, Backends: bes, AffinityTimeout: 3 * time.Hour},
		},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseJSON(t *testing.T) {
	data, err := os.ReadFile("testdata/valid.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []lb.Service{{
		Name: lb.ServiceName{Namespace: "default", Name: "api"},
		Frontends: []lb.FrontendSpec{{
			Frontend: lb.Frontend{L4Addr: l4("fd00:96::1", 443, lb.SCTP)},
			Backends: []lb.Backend{{L4Addr: l4("fd00:1::2", 8443, lb.SCTP)}},
		}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseExampleFile(t *testing.T) {
	data, err := os.ReadFile("../../deploy/standalone/services.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	tab := lb.NewTable()
	for _, svc := range svcs {
		if err := tab.Upsert(svc); err != nil {
			t.Error(err)
		}
	}
	if len(svcs) != 2 || len(svcs[0].Frontends) != 4 || len(svcs[1].Frontends) != 2 {
		t.Errorf("unexpected shape: %+v", svcs)
	}
}

// Every problem is reported, each naming the object and the field path.
func TestParseReportsEveryProblem(t *testing.T) {
	data, err := os.ReadFile("testdata/broken.yaml")
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := Parse(data)
	if svcs != nil {
		t.Errorf("a broken file gave services: %+v", svcs)
	}
	want := `services[0] (default/Web): name: "Web" must be lower-case letters, digits and inner '-'
services[0] (default/Web): clusterIP: "10.96.0.300" is not an IP address
services[0] (default/Web): ports[0].port: 70000 is out of range 1-65535
services[0] (default/Web): ports[0].protocol: "tcp" is not TCP, UDP or SCTP
services[0] (default/Web): ports[0].targetPort: must be a number or a port name, not an object
services[0] (default/Web): ports[0].colour: unknown field
services[0] (default/Web): sessionAffinityTimeoutSeconds: only allowed with sessionAffinity ClientIP
services[0] (default/Web): backends[0].ports.http: 0 is out of range 1-65535
services[0] (default/Web): backends[2].address: missing`
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("got %T %v, want *Error", err, err)
	}
	if got := err.Error(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	const web = `
  - name: web
    namespace: demo
    clusterIP: 10.96.0.10
    ports: [{port: 80}]
`
	cases := []struct{ name, in, want string }{
		{"empty", "", "the file is empty; write `services: []` for no services"},
		{"no services key", "{}", "services: missing; write `services: []` for no services"},
		{"top-level list", "[1]", "must be an object, not a list"},
		{"unknown top field", "services: []\nservice: []", "service: unknown field"},
		{"duplicate key", "services: []\nservices: []", `key "services" already set in map`},
		{"two documents", "services: []\n---\nservices: []", "more than one YAML document"},
		{"syntax", "services: [", "did not find expected node content"},
		{"broken second document", "services: []\n---\n[", "did not find expected node content"},
		{"services not a list", "services: 3", "services: must be a list, not a number"},
		{"service not an object", "services: [3]", "services[0]: must be an object, not a number"},
		{"port out of range", "services:" + strings.Replace(web, "port: 80", "port: 70000", 1),
			"services[0] (demo/web): ports[0].port: 70000 is out of range 1-65535"},
		{"port not an integer", "services:" + strings.Replace(web, "port: 80", "port: 80.5", 1),
			"services[0] (demo/web): ports[0].port: 80.5 is not an integer"},
		{"port as string", "services:" + strings.Replace(web, "port: 80", `port: "80"`, 1),
			"services[0] (demo/web): ports[0].port: must be an integer, not a string"},
		{"duplicate name", "services:" + web + web, "services[1] (demo/web): same namespace and name as services[0] (demo/web)"},
		{"duplicate vip", "services:" + web + strings.Replace(web, "name: web", "name: other", 1),
			"services[1] (demo/other): frontend 10.96.0.10:80/TCP is also used by services[0] (demo/web)"},
		{"external ip repeats cluster ip", "services:" + strings.Replace(web, "ports:", "externalIPs: [10.96.0.10]\n    ports:", 1),
			"services[0] (demo/web): externalIPs[0]: 10.96.0.10 is also clusterIP"},
		{"mixed families", "services:" + strings.Replace(web, "ports:", "externalIPs: ['fd00::1']\n    ports:", 1),
			"services[0] (demo/web): externalIPs[0]: fd00::1 is not of the same IP family as clusterIP"},
		{"unnamed ports", "services:" + strings.Replace(web, "ports: [{port: 80}]", "ports: [{port: 80}, {port: 81}]", 1),
			"services[0] (demo/web): ports[0].name: missing; every port needs a name when there are several"},
		{"same port twice", "services:" + strings.Replace(web, "ports: [{port: 80}]", "ports: [{name: a, port: 80}, {name: b, port: 80}]", 1),
			"services[0] (demo/web): ports[1]: port 80/TCP is also ports[0]"},
		{"named target missing", "services:" + strings.Replace(web, "ports: [{port: 80}]", "ports: [{port: 80, targetPort: http}]\n    backends: [{address: 10.0.0.1}]", 1),
			`services[0] (demo/web): backends[0].ports: has no port named "http", which ports[0].targetPort needs`},
		{"backend twice", "services:" + web + "    backends: [{address: 10.0.0.1}, {address: 10.0.0.1}]\n",
			"services[0] (demo/web): backends[1].address: 10.0.0.1 is also backends[0]"},
		{"bad state", "services:" + web + "    backends: [{address: 10.0.0.1, state: gone}]\n",
			`services[0] (demo/web): backends[0].state: "gone" is not active or terminating`},
		{"affinity range", "services:" + web + "    sessionAffinity: ClientIP\n    sessionAffinityTimeoutSeconds: 0\n",
			"services[0] (demo/web): sessionAffinityTimeoutSeconds: 0 is out of range 1-86400"},
		{"multicast vip", "services:" + strings.Replace(web, "10.96.0.10", "224.0.0.1", 1),
			`services[0] (demo/web): clusterIP: "224.0.0.1" is not a unicast address`},
		{"no name", "services: [{clusterIP: 10.96.0.10, ports: [{port: 80}]}]", "services[0]: name: missing"},
		{"null port map value", "services:" + web + "    backends: [{address: 10.0.0.1, ports: {http: null}}]\n",
			"services[0] (demo/web): backends[0].ports.http: must be a port number, not null"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svcs, err := Parse([]byte(c.in))
			if err == nil {
				t.Fatalf("no error; services %+v", svcs)
			}
			if svcs != nil {
				t.Errorf("services returned with an error: %+v", svcs)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("got\n%v\nwant it to contain\n%s", err, c.want)
			}
		})
	}
}

func TestParseAcceptsTrailingSeparatorAndNoServices(t *testing.T) {
	for _, in := range []string{"services: []", "services: []\n---\n", "---\nservices: []\n", `{"services": []}`} {
		svcs, err := Parse([]byte(in))
		if err != nil || len(svcs) != 0 {
			t.Errorf("%q: got %v, %v; want no services and no error", in, svcs, err)
		}
	}
}

func TestParseTooManyProblemsIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("services:\n")
	for range 200 {
		b.WriteString("  - {name: X, clusterIP: x, ports: [{port: 0}]}\n")
	}
	_, err := Parse([]byte(b.String()))
	var perr *Error
	if !errors.As(err, &perr) || len(perr.Problems) != maxProblems || perr.More == 0 {
		t.Fatalf("got %v", err)
	}
	if !strings.HasSuffix(err.Error(), "more problems") {
		t.Errorf("error does not say more problems were found: ...%s", err.Error()[len(err.Error())-80:])
	}
}
