package lab

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// Serve runs a demo backend in the namespace at nsPath: whoami on
// addr:8080 (TCP and UDP) and HTTP on addr:8000, until SIGTERM.
func Serve(nsPath, name, addr string) error {
	nsName := strings.TrimPrefix(nsPath, "/run/netns/")
	ns, err := nettopo.OpenNS(nsName)
	if err != nil {
		return err
	}
	defer ns.Release()
	w, err := nettopo.StartWhoami(ns, name, net.JoinHostPort(addr, "8080"))
	if err != nil {
		return err
	}
	defer w.Close()
	l, err := ns.Listen("tcp", net.JoinHostPort(addr, "8000"))
	if err != nil {
		return err
	}
	// HTTP/1.1 and h2c with prior knowledge (the L7 proxy's checks use
	// both; the proxy forwards HTTP/2 as HTTP/2).
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			// A request body is read through and named by its size and
			// SHA-256, so a client can tell it arrived whole (the L7
			// proxy's large-body check).
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(rw, "body: "+err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(rw, "hello from %s (you are %s) body %d sha256 %x\n", name, r.RemoteAddr, n, h.Sum(nil))
		}),
		ReadHeaderTimeout: 5 * time.Second,
		Protocols:         &protos,
	}
	go func() { _ = srv.Serve(l) }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return srv.Close()
}
