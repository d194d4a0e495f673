// Package netnsrun runs code on a thread inside a network namespace, for
// the steps the kernel resolves in the caller's namespace: opening a socket
// (listeners of the agent's HTTP servers), attaching a TCX link by ifindex.
//
// A socket belongs to the namespace of the thread that created it, for
// life; accept and the connections it yields then work from any thread. So
// the agent's HTTP servers (metrics, health, health-check node ports) open
// their sockets on a thread that entered --netns and serve them from
// ordinary goroutines: they answer on the node's interfaces, never on the
// namespace the agent process runs in.
package netnsrun

import (
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread inside the namespace at nsPath ("" means the
// caller's own). The thread is never unlocked: it ends with its goroutine,
// so no other goroutine ever runs in the foreign namespace.
func Do(nsPath string, fn func() error) error {
	if nsPath == "" {
		return fn()
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", nsPath, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen opens a TCP listener on addr inside the namespace at nsPath.
// network is "tcp", "tcp4" or "tcp6".
func Listen(nsPath, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(nsPath, func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}
