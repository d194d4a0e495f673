package l7proxy

import (
	"bufio"
	"io"
	"log"
	"net"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/l7"
)

// ReasonNoPolicy is the verdict reason when Policy.Lookup returned no rule
// set for a flow: the proxy fails closed.
const ReasonNoPolicy = "no L7 policy for this flow"

// dialTimeout bounds one upstream dial.
const dialTimeout = 10 * time.Second

// judgement is one applied rule set's verdict on a request.
type judgement struct {
	applied Applied
	verdict l7.Verdict
}

// judge asks every applied rule set in turn and stops at the first that
// denies; out is reused to keep the common case allocation-free.
func judge(applied []Applied, req *l7.Request, out []judgement) ([]judgement, bool) {
	if len(applied) == 0 {
		return append(out, judgement{verdict: l7.Verdict{Reason: ReasonNoPolicy}}), false
	}
	for _, a := range applied {
		v := a.Rules.Decide(req)
		out = append(out, judgement{a, v})
		if !v.Allowed {
			return out, false
		}
	}
	return out, true
}

// emitAll reports one event per rule set that judged the request.
func (p *Proxy) emitAll(start time.Time, f Flow, req *l7.Request, js []judgement, status int, proto string) {
	if p.cfg.Events == nil {
		return
	}
	for _, j := range js {
		p.cfg.Events(Event{
			Time: start, Flow: f, Direction: j.applied.Direction, Endpoint: j.applied.Endpoint,
			Method: req.Method, Host: req.Host, Path: req.Path,
			Verdict: j.verdict, Status: status, Proto: proto,
		})
	}
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writerSize is the bufio.Writer of a request or response head; bodies
// pass through it and are flushed per read.
const writerSize = 8 << 10

func (p *Proxy) getReader(r io.Reader) *bufio.Reader {
	if br, ok := p.readers.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, p.cfg.MaxHeaderBytes)
}

func (p *Proxy) putReader(br *bufio.Reader) {
	br.Reset(nil)
	p.readers.Put(br)
}

func (p *Proxy) getWriter(w net.Conn) *bufio.Writer {
	if bw, ok := p.writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, writerSize)
}

func (p *Proxy) putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	p.writers.Put(bw)
}

// discardLog silences net/http's HTTP/2 server log: malformed client
// frames are the client's problem, reported as events where they matter.
var discardLog = log.New(io.Discard, "", 0)
