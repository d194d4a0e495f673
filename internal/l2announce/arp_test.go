package l2announce

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x64}
	nodeMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	clientIP  = netip.MustParseAddr("192.168.50.100")
	lbIP      = netip.MustParseAddr("192.168.50.200")
)

func TestReplyAnswersTheAsker(t *testing.T) {
	req, ok := parseRequest(buildRequest(make([]byte, frameLen), clientMAC, clientIP, lbIP))
	if !ok || req.senderIP != clientIP || req.targetIP != lbIP || !bytes.Equal(req.senderMAC, clientMAC) || req.gratuitous() {
		t.Fatalf("request parsed as %+v ok=%v", req, ok)
	}
	reply := buildReply(make([]byte, frameLen), nodeMAC, req)
	want := []byte{
		0x02, 0, 0, 0, 0, 0x64, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x06, // to the asker, from the node, ARP
		0, 1, 0x08, 0, 6, 4, 0, 2, // Ethernet/IPv4, reply
		0x02, 0, 0, 0, 0, 0x0b, 192, 168, 50, 200, // the LB IP is at the node
		0x02, 0, 0, 0, 0, 0x64, 192, 168, 50, 100, // to the asker
	}
	if !bytes.Equal(reply, want) {
		t.Fatalf("reply\n got % x\nwant % x", reply, want)
	}
	mac, ip, ok := parseReply(reply)
	if !ok || ip != lbIP || !bytes.Equal(mac, nodeMAC) {
		t.Fatalf("reply parsed as %s %s %v", mac, ip, ok)
	}
	if _, ok := parseRequest(reply); ok {
		t.Fatal("a reply parsed as a request: the responder would answer answers")
	}
}

func TestGratuitousIsNotAnswered(t *testing.T) {
	g := buildGratuitous(make([]byte, frameLen), nodeMAC, lbIP)
	req, ok := parseRequest(g)
	if !ok || !req.gratuitous() || req.senderIP != lbIP || !bytes.Equal(g[:6], broadcast) {
		t.Fatalf("gratuitous ARP parsed as %+v ok=%v", req, ok)
	}
}

func TestParseRejectsOtherFrames(t *testing.T) {
	good := buildRequest(make([]byte, frameLen), clientMAC, clientIP, lbIP)
	for name, mutate := range map[string]func(b []byte){
		"short":      nil,
		"ipv4 frame": func(b []byte) { b[12], b[13] = 0x08, 0x00 },
		"token ring": func(b []byte) { b[15] = 6 },
		"ipv6":       func(b []byte) { b[16], b[17] = 0x86, 0xdd },
		"hlen 8":     func(b []byte) { b[18] = 8 },
		"rarp op":    func(b []byte) { b[21] = 3 },
	} {
		b := bytes.Clone(good)
		if mutate == nil {
			b = b[:frameLen-1]
		} else {
			mutate(b)
		}
		if _, ok := parseRequest(b); ok {
			t.Errorf("%s: parsed as a request", name)
		}
	}
}
