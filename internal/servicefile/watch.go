package servicefile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// DefaultInterval is how often Watch looks at the file when told 0.
const DefaultInterval = time.Second

// racyWindow: a file read less than this after its modification time may
// be rewritten again without a visible change of size or time (coarse
// file-system clocks), so it is read again until it is older.
const racyWindow = 2 * time.Second

// Watch parses the file at path now and whenever it changes, until ctx
// ends, calling onChange with every good version and onError with every
// problem (each distinct problem once). A bad version never reaches
// onChange: the caller keeps the last good state.
//
// It polls: every interval it compares the file's modification time and
// size with the last look. A change is read only once the file has stayed
// the same for one whole interval, so a writer in the middle of writing is
// not caught half-way; then the content's SHA-256 decides whether anything
// really changed. Polling follows editors that write a new file and rename
// it over the old one, which breaks inotify watches, and needs no cleanup.
// Changes show up within one to two intervals.
func Watch(ctx context.Context, path string, interval time.Duration, onChange func([]loadbalancer.Service), onError func(error)) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	w := &watcher{path: path, onChange: onChange, onError: onError}
	w.poll(true)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			w.poll(false)
		}
	}
}

// stamp is what a stat tells about the content without reading it.
type stamp struct {
	mtime time.Time
	size  int64
}

type watcher struct {
	path     string
	onChange func([]loadbalancer.Service)
	onError  func(error)

	seen    stamp     // at the previous poll
	read    stamp     // when the content was last read
	readAt  time.Time // time of that read
	hash    [sha256.Size]byte
	hasHash bool
	lastErr string // last problem reported, so each is reported once
}

func (w *watcher) poll(first bool) {
	st, err := w.stat()
	if err != nil {
		w.fail(err)
		return
	}
	settled := first || st == w.seen
	w.seen = st
	if !settled || (st == w.read && w.readAt.Sub(st.mtime) > racyWindow) {
		return
	}
	data, err := w.readFile()
	if err != nil {
		w.fail(err)
		return
	}
	w.read, w.readAt = st, time.Now()
	sum := sha256.Sum256(data)
	if w.hasHash && sum == w.hash {
		return
	}
	w.hash, w.hasHash = sum, true
	svcs, err := Parse(data)
	if err != nil {
		w.fail(fmt.Errorf("services file %s: %w", w.path, err))
		return
	}
	w.lastErr = ""
	w.onChange(svcs)
}

func (w *watcher) stat() (stamp, error) {
	fi, err := os.Stat(w.path)
	if err != nil {
		return stamp{}, fmt.Errorf("services file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return stamp{}, fmt.Errorf("services file %s: not a regular file", w.path)
	}
	return stamp{mtime: fi.ModTime(), size: fi.Size()}, nil
}

func (w *watcher) readFile() ([]byte, error) {
	f, err := os.Open(w.path)
	if err != nil {
		return nil, fmt.Errorf("services file: %w", err)
	}
	defer f.Close()
	// Room for the whole file at once, as its size is now (it may change):
	// growing a buffer as it fills costs twice the file or more.
	var buf bytes.Buffer
	if fi, err := f.Stat(); err == nil && fi.Size() <= MaxFileSize {
		buf.Grow(int(fi.Size()) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxFileSize+1)); err != nil {
		return nil, fmt.Errorf("services file %s: %w", w.path, err)
	}
	return buf.Bytes(), nil
}

// fail reports err unless it was the last thing reported, and forgets the
// content, so the same file coming back is parsed and reported again.
func (w *watcher) fail(err error) {
	var perr *Error
	if !errors.As(err, &perr) {
		w.seen, w.read, w.hasHash = stamp{}, stamp{}, false
	}
	if msg := err.Error(); msg != w.lastErr {
		w.lastErr = msg
		w.onError(err)
	}
}
