// Package cniserver is the agent's side of fastpath-cni: it serves the
// cniapi over a unix socket and does the work of each verb (address from
// internal/ipam, veth from internal/podnet, tc_lb on the host veth, record
// in internal/endpoint).
package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fastpath-net/fastpath/internal/cniapi"
)

// maxRequest bounds a request body: a GC's valid list of a few thousand
// attachments fits many times over.
const maxRequest = 4 << 20

// Listen opens the API socket, replacing one a previous agent left behind.
func Listen(socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, fmt.Errorf("cni socket directory: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale cni socket: %w", err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("cni socket: %w", err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve answers the API on ln until ctx ends, then removes the socket so
// that plugins learn at once that no agent runs.
func Serve(ctx context.Context, ln net.Listener, h *Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: Mux(h, log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Info("serving the CNI API", "socket", ln.Addr().String())
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Mux routes the v1 paths to h.
func Mux(h *Handler, log *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	for path, fn := range map[string]func(*cniapi.Request) (*cniapi.Response, *cniapi.Error){
		cniapi.PathAdd:    h.Add,
		cniapi.PathDel:    h.Del,
		cniapi.PathCheck:  h.Check,
		cniapi.PathGC:     h.GC,
		cniapi.PathStatus: h.Status,
	} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			resp, apiErr := decodeAndRun(r, fn)
			if apiErr != nil {
				resp = &cniapi.Response{Error: apiErr}
				log.Warn("cni request failed", "path", path, "code", apiErr.Code, "error", apiErr.Error(), "took", time.Since(start).String())
			} else {
				log.Debug("cni request", "path", path, "took", time.Since(start).String())
			}
			body, err := json.Marshal(resp)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		})
	}
	return mux
}

func decodeAndRun(r *http.Request, fn func(*cniapi.Request) (*cniapi.Response, *cniapi.Error)) (*cniapi.Response, *cniapi.Error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
	if err != nil {
		return nil, cniapi.Errorf(cniapi.CodeIOFailure, "reading the request failed", err.Error())
	}
	if len(data) > maxRequest {
		return nil, cniapi.Errorf(cniapi.CodeDecodingFailure, "request larger than 4 MiB", "")
	}
	var req cniapi.Request
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, cniapi.Errorf(cniapi.CodeDecodingFailure, "cannot decode the request", err.Error())
	}
	return fn(&req)
}
