package l2announce

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/netnsrun"
)

// arpSocket is an AF_PACKET socket bound to one interface that sees every
// ARP frame on it, in and out. It is opened inside the node's namespace
// and then used from any goroutine; the Go poller drives it, so Close
// ends a pending read.
type arpSocket struct {
	f    *os.File
	mac  net.HardwareAddr
	name string
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openARPSocket opens the socket on ifname in the namespace at nsPath ("":
// the caller's own).
func openARPSocket(nsPath, ifname string) (*arpSocket, error) {
	var s *arpSocket
	err := netnsrun.Do(nsPath, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if len(ifc.HardwareAddr) != 6 {
			return fmt.Errorf("%s has no Ethernet address", ifname)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(etherTypeARP)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherTypeARP), Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind AF_PACKET socket to %s: %w", ifname, err)
		}
		s = &arpSocket{f: os.NewFile(uintptr(fd), "arp-"+ifname), mac: ifc.HardwareAddr, name: ifname}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("l2 announcements on %s: %w", ifname, err)
	}
	return s, nil
}

// read returns the next frame the interface received into b; frames it
// sent itself (its own replies and gratuitous ARPs) are skipped.
func (s *arpSocket) read(b []byte) (int, error) {
	rc, err := s.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), b, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			return 0, err
		}
		if rerr != nil {
			return 0, rerr
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return n, nil
	}
}

func (s *arpSocket) write(frame []byte) error {
	_, err := s.f.Write(frame)
	return err
}

func (s *arpSocket) close() error { return s.f.Close() }
