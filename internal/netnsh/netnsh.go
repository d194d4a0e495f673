// Package netnsh opens netlink handles in network namespaces named by path,
// the way the agent names them (--netns, a pod's CNI_NETNS).
package netnsh

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink returns a route-netlink handle in the namespace at nsPath; ""
// means the caller's own.
func Netlink(nsPath string) (*netlink.Handle, error) {
	if nsPath == "" {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
}
