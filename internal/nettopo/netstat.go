package nettopo

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// TCPExt reads every TcpExt counter of the namespace (/proc/net/netstat):
// SYNs sent again, SYNs a TIME_WAIT refused, and the like. Tests and the
// benchmarks read them to tell a slow connection's cause.
func (n *NS) TCPExt() (map[string]uint64, error) {
	var data []byte
	// /proc/thread-self/net shows the namespace of the reading thread.
	err := n.Do(func() (err error) {
		data, err = os.ReadFile("/proc/thread-self/net/netstat")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netstat of %s: %w", n.Name, err)
	}
	vals, err := ParseNetstat(string(data), "TcpExt:")
	if err != nil {
		return nil, fmt.Errorf("netstat of %s: %w", n.Name, err)
	}
	return vals, nil
}

// ParseNetstat reads one section of /proc/net/netstat: a line of names
// and a line of values, both starting with prefix.
func ParseNetstat(data, prefix string) (map[string]uint64, error) {
	var lines [][]string
	for _, l := range strings.Split(data, "\n") {
		if strings.HasPrefix(l, prefix) {
			lines = append(lines, strings.Fields(l)[1:])
		}
	}
	if len(lines) != 2 || len(lines[0]) != len(lines[1]) {
		return nil, fmt.Errorf("no %s section", prefix)
	}
	out := map[string]uint64{}
	for i, name := range lines[0] {
		v, err := strconv.ParseUint(lines[1][i], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", prefix, name, err)
		}
		out[name] = v
	}
	return out, nil
}
