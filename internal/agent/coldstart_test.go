package agent

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath"
)

// TestKubernetesListStartsBeforeDatapathLoads: the informers' first list,
// the longest part of a cold start, runs while the datapath loads rather
// than after it. The datapath load here waits for the (stand-in) apiserver
// to be asked for Services and then fails; with the watch started only
// after the load, nothing would ask and the load would give up waiting.
func TestKubernetesListStartsBeforeDatapathLoads(t *testing.T) {
	asked := make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- r.URL.Path:
		default:
		}
		http.Error(w, "stand-in apiserver", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}

	errLoad := errors.New("stand-in datapath load failed")
	var sawList bool
	loadDatapath = func(datapath.Config) (*datapath.Datapath, error) {
		deadline := time.After(10 * time.Second)
		for {
			select {
			case p := <-asked:
				if p == "/api/v1/services" || p == "/apis/discovery.k8s.io/v1/endpointslices" {
					sawList = true
					return nil, errLoad
				}
			case <-deadline:
				return nil, errLoad
			}
		}
	}
	t.Cleanup(func() { loadDatapath = datapath.Load })

	err := Run(t.Context(), Config{
		PinDir:     t.TempDir(),
		Kubernetes: &Kubernetes{Kubeconfig: kubeconfig, NodeName: "n1"},
	})
	if !errors.Is(err, errLoad) {
		t.Fatalf("Run: %v, want the datapath's error", err)
	}
	if !sawList {
		t.Fatal("the apiserver was not asked for Services or EndpointSlices while the datapath loaded")
	}
}
