package nettopo

import (
	"context"
	"net"
	"net/http"
	"time"
)

// HTTPClient is an HTTP client whose connections start inside n.
// http.Transport dials on goroutines of its own, so wrapping Client.Get in
// n.Do would dial from the caller's namespace; the dialer itself enters n.
// No proxy from the environment, no keep-alive (each request is a probe).
func (n *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = n.Do(func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
}
