package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

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
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(rw, "hello from %s (you are %s)\n", name, r.RemoteAddr)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return srv.Close()
}

// Probe connects to addr from inside the namespace at nsPath and prints the
// answering backend and the peer address its socket reports.
func Probe(nsPath, addr string) (string, error) {
	runtime.LockOSThread()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return "", err
	}
	if err := netns.Set(ns); err != nil {
		return "", err
	}
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(name) + " " + c.RemoteAddr().String(), nil
}
