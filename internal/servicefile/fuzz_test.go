package servicefile

import (
	"os"
	"path/filepath"
	"testing"

	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// FuzzParse: no input makes Parse panic, and whatever it accepts the
// load-balancer table accepts too. Without -fuzz it runs only the seeds.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*")
	files = append(files, "../../deploy/standalone/services.example.yaml")
	for _, name := range files {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	for _, s := range []string{
		"", "services: []", "services:\n- {}", "services: [{name: a, clusterIP: '::ffff:10.0.0.1', ports: [{port: 1}], backends: [{address: '::ffff:10.0.0.2'}]}]",
		"services: [{name: a, clusterIP: 10.0.0.1, ports: [{port: 1, targetPort: x}], backends: [{address: 10.0.0.2, ports: {x: 9}}]}]",
		"a: &a [*a]", "services: !!binary aGVsbG8=", "services: [{name: a, ports: [{port: 1e3}]}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		svcs, err := Parse(data)
		if err != nil {
			if svcs != nil || err.Error() == "" {
				t.Fatalf("error %q came with services %+v", err, svcs)
			}
			return
		}
		tab := lb.NewTable()
		for _, svc := range svcs {
			if err := tab.Upsert(svc); err != nil {
				t.Fatalf("Parse accepted what the table refuses: %v\ninput:\n%s", err, data)
			}
		}
	})
}
