package nettopo

import (
	"context"
	"net"
	"net/http"
	"syscall"
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

// DialFromPort connects from inside n with source port port and
// SO_REUSEADDR, as a client that reuses its port must set: two connections
// to different destinations may share the port (tuple-clash tests).
func (n *NS) DialFromPort(ctx context.Context, port int, network, addr string) (conn net.Conn, err error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{Port: port}, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	err = n.Do(func() error {
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// SendRawIPv4 sends pkt, a whole IPv4 packet (header included, as the
// kernel takes it on an IPPROTO_RAW socket), from inside n: tests forge
// what a socket would not send, such as a spoofed source address.
func (n *NS) SendRawIPv4(pkt []byte) error {
	if len(pkt) < 20 {
		return syscall.EINVAL
	}
	dst := [4]byte(pkt[16:20])
	return n.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		return syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: dst})
	})
}
