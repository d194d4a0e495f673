package socklb

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// opTimeout bounds every client operation; a translated connect or datagram
// on lo answers in microseconds.
const opTimeout = 2 * time.Second

// TestHelperClient is not a test: it is the client process the socket-LB
// tests start (see startClient). It reads requests from stdin and answers
// each with one result line on stdout.
func TestHelperClient(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("client process of the socket-LB tests; runs only when they start it")
	}
	// Sockets belong to the netns of the thread that creates them: keep this
	// goroutine on the thread that enters the test namespace.
	runtime.LockOSThread()
	ns, err := netns.GetFromPath(os.Getenv(nsEnv))
	if err != nil {
		t.Fatalf("open netns: %v", err)
	}
	if err := netns.Set(ns); err != nil {
		t.Fatalf("enter netns: %v", err)
	}
	var held held
	defer held.close()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req request
		var res result
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			res = result{Err: fmt.Sprintf("bad request %q: %v", in.Text(), err)}
		} else {
			res = serve(req, &held)
		}
		line, _ := json.Marshal(res)
		fmt.Printf("%s%s\n", resultPrefix, line)
	}
}

// held are the sockets a client keeps open between requests.
type held struct {
	tcp *net.TCPConn
	udp *net.UDPConn
}

func (h *held) close() {
	if h.tcp != nil {
		h.tcp.Close()
		h.tcp = nil
	}
	if h.udp != nil {
		h.udp.Close()
		h.udp = nil
	}
}

func serve(req request, held *held) result {
	switch req.Op {
	case "tcp":
		return dialTCP(req.Addr, &held.tcp)
	case "peer":
		if held.tcp == nil {
			return result{Err: "no TCP connection held"}
		}
		peer, err := peerOf(held.tcp)
		if err != nil {
			return errResult(err)
		}
		return result{Peer: peer}
	case "close":
		held.close()
		return result{}
	case "tcpmany":
		return dialTCPMany(req.Addr, req.N)
	case "udp":
		return sendUDP(req.Addr)
	case "udpconn":
		return connectUDP(req.Addr)
	case "udphold":
		return holdUDP(req.Addr, &held.udp)
	case "udpask":
		if held.udp == nil {
			return result{Err: "no UDP socket held"}
		}
		return askUDP(held.udp, result{})
	}
	return result{Err: "unknown op " + req.Op}
}

// dialTCPMany makes n connections one after the other, each connected,
// read from (the backend's name), asked getpeername and closed. It fails
// at the first connection that does not show addr as its peer; Body is how
// many there were.
func dialTCPMany(addr string, n int) result {
	for i := range n {
		var c *net.TCPConn
		r := dialTCP(addr, &c)
		if c != nil {
			c.Close()
		}
		if r.Errno != "" {
			r.Err = fmt.Sprintf("connection %d: %s", i, r.Err)
			return r
		}
		if r.Peer != addr {
			return result{Errno: "OTHER", Err: fmt.Sprintf("connection %d: peer %s, want %s", i, r.Peer, addr)}
		}
	}
	return result{Body: fmt.Sprint(n)}
}

// holdUDP connects a UDP socket, keeps it for later "udpask" requests and
// asks once.
func holdUDP(addr string, held **net.UDPConn) result {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return errResult(err)
	}
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return errResult(err)
	}
	if *held != nil {
		(*held).Close()
	}
	*held = c
	peer, err := peerOf(c)
	if err != nil {
		return errResult(err)
	}
	return askUDP(c, result{Peer: peer})
}

// askUDP sends on a connected socket and reads the answer with recvfrom().
func askUDP(c *net.UDPConn, res result) result {
	if _, err := c.Write([]byte("hello")); err != nil {
		return errResult(err)
	}
	return readUDP(c, res)
}

// dialTCP connects, reads the backend's name and keeps the connection open
// for a later "peer" request.
func dialTCP(addr string, held **net.TCPConn) result {
	d := net.Dialer{Timeout: opTimeout}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return errResult(err)
	}
	tc := c.(*net.TCPConn)
	if *held != nil {
		(*held).Close()
	}
	*held = tc
	tc.SetDeadline(time.Now().Add(opTimeout))
	name, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		return errResult(err)
	}
	peer, err := peerOf(tc)
	if err != nil {
		return errResult(err)
	}
	return result{Body: name[:len(name)-1], Peer: peer}
}

// sendUDP is an unconnected sendto() and recvfrom().
func sendUDP(addr string) result {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return errResult(err)
	}
	pc, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return errResult(err)
	}
	defer pc.Close()
	if _, err := pc.WriteToUDPAddrPort([]byte("hello"), ap); err != nil {
		return errResult(err)
	}
	return readUDP(pc, result{})
}

// connectUDP is connect(), send() and recvfrom() on a connected socket.
func connectUDP(addr string) result {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return errResult(err)
	}
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return errResult(err)
	}
	defer c.Close()
	peer, err := peerOf(c)
	if err != nil {
		return errResult(err)
	}
	return askUDP(c, result{Peer: peer})
}

// readUDP uses recvfrom() with an address, which is what runs recvmsg4.
func readUDP(c *net.UDPConn, res result) result {
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(opTimeout))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return errResult(err)
	}
	res.Body = string(buf[:n])
	res.From = from.String()
	return res
}

func peerOf(c syscall.Conn) (string, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var sa unix.Sockaddr
	var serr error
	if err := raw.Control(func(fd uintptr) { sa, serr = unix.Getpeername(int(fd)) }); err != nil {
		return "", err
	}
	if serr != nil {
		return "", fmt.Errorf("getpeername: %w", serr)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return "", fmt.Errorf("getpeername: not IPv4: %T", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)).String(), nil
}

func errResult(err error) result {
	res := result{Err: err.Error()}
	var errno syscall.Errno
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		res.Errno = "TIMEOUT"
	case errors.As(err, &errno):
		res.Errno = unix.ErrnoName(errno)
	default:
		res.Errno = "OTHER"
	}
	return res
}
