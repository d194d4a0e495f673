package cniapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrUnreachable wraps every failure to reach the agent at all (no socket,
// nobody listening): the plugin turns it into "try again later".
var ErrUnreachable = errors.New("fastpath agent unreachable")

// maxResponse bounds what the client reads: a result is a few hundred bytes.
const maxResponse = 1 << 20

// Call sends req to path on the agent listening at socket and returns its
// response. An *Error from the agent comes back as the error; transport
// failures wrap ErrUnreachable (could not connect) or are plain errors.
//
// It writes HTTP/1.1 by hand rather than using net/http: the plugin runs once
// per pod, and net/http's package initialisation and binary size roughly
// triple the CPU time of every exec.
func Call(socket, path string, req *Request, timeout time.Duration) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, socket, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: fastpath-agent\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", path, len(body))
	if _, err := conn.Write(append(head.Bytes(), body...)); err != nil {
		return nil, fmt.Errorf("send %s to the agent: %w", path, err)
	}
	status, raw, err := readResponse(bufio.NewReader(conn))
	if err != nil {
		return nil, fmt.Errorf("read the agent's answer to %s: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, fmt.Errorf("agent answered %s with status %d and no valid JSON: %.200q", path, status, raw)
	}
	if resp.Error != nil {
		return &resp, resp.Error
	}
	if status != 200 {
		return nil, fmt.Errorf("agent answered %s with status %d", path, status)
	}
	return &resp, nil
}

// readResponse reads one HTTP/1.1 response with a Content-Length body (the
// agent always sends one) or, failing that, a body up to EOF.
func readResponse(r *bufio.Reader) (int, []byte, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, nil, err
	}
	proto, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil {
		return 0, nil, fmt.Errorf("not an HTTP response: %.100q", line)
	}
	length := -1
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, nil, err
		}
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		switch strings.ToLower(name) {
		case "content-length":
			if length, err = strconv.Atoi(strings.TrimSpace(value)); err != nil || length < 0 || length > maxResponse {
				return 0, nil, fmt.Errorf("bad Content-Length %q", value)
			}
		case "transfer-encoding":
			return 0, nil, fmt.Errorf("unexpected Transfer-Encoding %q", value)
		}
	}
	if length < 0 {
		body, err := io.ReadAll(io.LimitReader(r, maxResponse))
		return status, body, err
	}
	body := make([]byte, length)
	_, err = io.ReadFull(r, body)
	return status, body, err
}
