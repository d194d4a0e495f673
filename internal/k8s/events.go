package k8s

import (
	"errors"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// Component is the source of the agent's Events.
const Component = "fastpath-agent"

// Event reasons.
const (
	ReasonCannotProgram    = "FastpathCannotProgram"
	ReasonFrontendConflict = "FastpathFrontendConflict"
)

// APIRecorder sends Events to the apiserver (core/v1 Events, which
// kube-proxy's system:node-proxier role may create). The broadcaster's
// correlator aggregates and rate-limits repeats per object.
func APIRecorder(client kubernetes.Interface, nodeName string) (record.EventRecorder, func()) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component, Host: nodeName}), b.Shutdown
}

// reporter turns problems into log lines and Events, each once while it
// lasts: a Service translated a thousand times with the same bad slice
// gives one Event, and a problem that goes away and comes back gives a new
// one.
type reporter struct {
	log *slog.Logger

	mu      sync.Mutex // the worker and the agent (program errors) both report
	rec     record.EventRecorder
	shown   map[loadbalancer.ServiceName]map[string]bool
	progErr map[loadbalancer.ServiceName]string
}

func newReporter(log *slog.Logger) *reporter {
	return &reporter{log: log, shown: map[loadbalancer.ServiceName]map[string]bool{}, progErr: map[loadbalancer.ServiceName]string{}}
}

func (r *reporter) setRecorder(rec record.EventRecorder) {
	r.mu.Lock()
	r.rec = rec
	r.mu.Unlock()
}

// problems reports what is new in res's problems and notes.
func (r *reporter) problems(name loadbalancer.ServiceName, res svctranslate.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.shown[name]
	next := make(map[string]bool, len(res.Problems)+len(res.Notes))
	for _, p := range res.Problems {
		once(old, next, "problem ", p, r.warn)
	}
	for _, p := range res.Notes {
		once(old, next, "note ", p, r.info)
	}
	if len(next) == 0 {
		delete(r.shown, name)
		return
	}
	r.shown[name] = next
}

// once reports p unless it was reported before (old) or just now (next).
func once(old, next map[string]bool, kind string, p svctranslate.Problem, report func(svctranslate.Problem)) {
	key := kind + p.String()
	if !old[key] && !next[key] {
		report(p)
	}
	next[key] = true
}

func (r *reporter) info(p svctranslate.Problem) {
	r.log.Info("not programmed, as kube-proxy would not", objectAttrs(p)...)
}

func (r *reporter) warn(p svctranslate.Problem) {
	r.log.Warn("cannot program", objectAttrs(p)...)
	if r.rec != nil {
		ref := p.Object
		r.rec.Eventf(&ref, corev1.EventTypeWarning, ReasonCannotProgram, "%s: %s", p.Field, p.Message)
	}
}

func objectAttrs(p svctranslate.Problem) []any {
	return []any{"kind", p.Object.Kind, "object", p.Object.Namespace + "/" + p.Object.Name, "field", p.Field, "problem", p.Message}
}

// programError reports a table error for a Service once; nil clears it.
// svc may be nil when the Service is gone from the cache: then only the
// log line is written.
func (r *reporter) programError(name loadbalancer.ServiceName, svc *corev1.Service, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.progErr, name)
		return
	}
	msg := err.Error()
	if r.progErr[name] == msg {
		return
	}
	r.progErr[name] = msg
	r.log.Warn("cannot program", "kind", "Service", "object", name.String(), "problem", msg)
	if r.rec == nil || svc == nil {
		return
	}
	reason := ReasonCannotProgram
	if errors.Is(err, loadbalancer.ErrConflict) {
		reason = ReasonFrontendConflict
	}
	r.rec.Event(svc, corev1.EventTypeWarning, reason, msg)
}

// forget drops a deleted Service's reports, so a new Service of the same
// name is reported afresh.
func (r *reporter) forget(name loadbalancer.ServiceName) {
	r.mu.Lock()
	delete(r.shown, name)
	delete(r.progErr, name)
	r.mu.Unlock()
}

// event sends a Warning Event about obj, when a recorder is set.
func (r *reporter) event(obj runtime.Object, reason, msg string) {
	r.mu.Lock()
	rec := r.rec
	r.mu.Unlock()
	if rec != nil {
		rec.Event(obj, corev1.EventTypeWarning, reason, msg)
	}
}
