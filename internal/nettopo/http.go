package nettopo

import (
	"context"
	"net"
	"net/http"
	"time"
)

// DialContext opens a connection from inside n. It has the signature of
// net.Dialer.DialContext, so it can stand in for it in an http.Transport or
// a client-go rest.Config: those dial on goroutines of their own, so
// wrapping the request in n.Do would dial from the caller's namespace; the
// dialer itself has to enter n.
func (n *NS) DialContext(ctx context.Context, network, addr string) (conn net.Conn, err error) {
	err = n.Do(func() error {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// HTTPClient is an HTTP client whose connections start inside n (see
// DialContext). No proxy from the environment, no keep-alive (each request
// is a probe).
func (n *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext:       n.DialContext,
	}}
}
