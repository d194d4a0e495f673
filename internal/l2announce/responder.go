package l2announce

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"
)

// responder answers ARP requests for the IPs this node holds, on one
// interface, from userspace. ARP is a few packets per neighbour per
// minute, so a userspace answer costs nothing measurable, and it stays off
// the interface's TC hook that the load balancer owns; the kernel ignores
// these requests by itself (the IPs are no local addresses of the node).
type responder struct {
	sock *arpSocket
	log  *slog.Logger
	mu   sync.RWMutex
	ips  map[netip.Addr]bool
}

func newResponder(sock *arpSocket, log *slog.Logger) *responder {
	return &responder{sock: sock, log: log, ips: map[netip.Addr]bool{}}
}

// serve answers until the socket is closed.
func (r *responder) serve() {
	buf := make([]byte, 1514)
	out := make([]byte, frameLen)
	for {
		n, err := r.sock.read(buf)
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil {
			r.log.Warn("l2 announcements: reading ARP", "interface", r.sock.name, "error", err)
			time.Sleep(100 * time.Millisecond) // a downed link fails every read
			continue
		}
		req, ok := parseRequest(buf[:n])
		if !ok || req.gratuitous() || !r.holds(req.targetIP) {
			continue
		}
		if err := r.sock.write(buildReply(out, r.sock.mac, req)); err != nil {
			r.log.Warn("l2 announcements: ARP reply", "interface", r.sock.name, "ip", req.targetIP, "error", err)
		}
	}
}

func (r *responder) holds(ip netip.Addr) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.ips[ip]
}

// announce starts answering for ip and tells the segment at once.
func (r *responder) announce(ip netip.Addr) {
	r.mu.Lock()
	r.ips[ip] = true
	r.mu.Unlock()
	if err := r.sock.write(buildGratuitous(make([]byte, frameLen), r.sock.mac, ip)); err != nil {
		r.log.Warn("l2 announcements: gratuitous ARP", "interface", r.sock.name, "ip", ip, "error", err)
	}
}

func (r *responder) withdraw(ip netip.Addr) {
	r.mu.Lock()
	delete(r.ips, ip)
	r.mu.Unlock()
}
