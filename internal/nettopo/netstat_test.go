package nettopo

import "testing"

func TestParseNetstat(t *testing.T) {
	data := "TcpExt: SyncookiesSent PAWSTimewait TCPSynRetrans\nTcpExt: 0 7 12\nIpExt: InNoRoutes\nIpExt: 3\n"
	got, err := ParseNetstat(data, "TcpExt:")
	if err != nil {
		t.Fatal(err)
	}
	if got["PAWSTimewait"] != 7 || got["TCPSynRetrans"] != 12 || len(got) != 3 {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{"", "TcpExt: A B\nTcpExt: 1\n", "TcpExt: A\nTcpExt: x\n", "TcpExt: A\n"} {
		if _, err := ParseNetstat(bad, "TcpExt:"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
