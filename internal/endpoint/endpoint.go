// Package endpoint keeps the agent's record of every pod interface it
// attached: one JSON file per endpoint in a state directory, so the records
// survive agent restarts and `fastpathctl endpoint list` reads them without
// asking the agent.
//
// Each endpoint has a small numeric ID (1-65535), unique on the node, for
// per-endpoint state in BPF maps (policy keys them by it).
package endpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/statefile"
)

// Key names an endpoint the way CNI does.
type Key struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

func (k Key) String() string { return k.Network + "/" + k.ContainerID + "/" + k.IfName }

// Pod is the Kubernetes pod of an endpoint, from CNI_ARGS (empty outside
// Kubernetes).
type Pod struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	UID       string `json:"uid,omitempty"`
}

// Endpoint is one pod interface.
type Endpoint struct {
	ID uint16 `json:"id"`
	Key
	NetNS     string       `json:"netns"`     // the pod's network namespace
	Interface string       `json:"interface"` // host-side veth, in the node's namespace
	MAC       string       `json:"mac"`       // the pod interface's address
	IPs       []netip.Addr `json:"ips"`
	MTU       int          `json:"mtu"`
	TC        string       `json:"tc,omitempty"` // how tc_lb is attached to Interface: tcx or clsact
	Pod       Pod          `json:"pod"`
	// Labels and Identity are placeholders for the policy engine, which
	// fills them from the Pod object.
	Labels   map[string]string `json:"labels,omitempty"`
	Identity uint32            `json:"identity,omitempty"`
	Created  time.Time         `json:"created"`
}

// ErrNoIDs: all 65535 endpoint IDs are in use.
var ErrNoIDs = errors.New("no free endpoint ID")

// Store is the set of endpoint records. Safe for concurrent use.
type Store struct {
	dir string

	mu    sync.Mutex
	byKey map[Key]*Endpoint
	ids   map[uint16]Key
	next  uint16 // where the search for a free ID starts
}

// Open reads the records under dir (created if missing). Unreadable files
// are reported, not deleted, and hold no ID.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("endpoint state directory: %w", err)
	}
	s := &Store{dir: dir, byKey: map[Key]*Endpoint{}, ids: map[uint16]Key{}, next: 1}
	eps, err := Load(dir)
	for _, ep := range eps {
		s.byKey[ep.Key] = ep
		s.ids[ep.ID] = ep.Key
	}
	return s, err
}

// Load reads the records under dir, ordered by ID; errors name the files
// that could not be read, and the rest is returned anyway.
func Load(dir string) ([]*Endpoint, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Endpoint
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ep := &Endpoint{}
		if err := json.Unmarshal(data, ep); err != nil || ep.ID == 0 {
			errs = append(errs, fmt.Errorf("endpoint record %s: not valid (%v)", e.Name(), err))
			continue
		}
		out = append(out, ep)
	}
	slices.SortFunc(out, func(a, b *Endpoint) int { return int(a.ID) - int(b.ID) })
	return out, errors.Join(errs...)
}

// Get returns a copy of the record of k.
func (s *Store) Get(k Key) (Endpoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, ok := s.byKey[k]
	if !ok {
		return Endpoint{}, false
	}
	return *ep, true
}

// List returns copies of every record, ordered by ID.
func (s *Store) List() []Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Endpoint, 0, len(s.byKey))
	for _, ep := range s.byKey {
		out = append(out, *ep)
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return int(a.ID) - int(b.ID) })
	return out
}

// Put stores ep, giving it a free ID when it has none, and returns the ID.
// The record is on disk when Put returns. The ID is reserved under the
// lock and the file written outside it, so concurrent ADDs do not queue
// behind each other's fsync. One key must not be Put and Deleted at once.
func (s *Store) Put(ep Endpoint) (uint16, error) {
	s.mu.Lock()
	fresh := ep.ID == 0
	if fresh {
		id, ok := s.freeID()
		if !ok {
			s.mu.Unlock()
			return 0, ErrNoIDs
		}
		ep.ID = id
		s.ids[id] = ep.Key
		s.next = id + 1
	}
	s.mu.Unlock()
	data, err := json.MarshalIndent(ep, "", "  ")
	if err == nil {
		err = statefile.Replace(s.path(ep.Key), data, 0o644)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if fresh {
			delete(s.ids, ep.ID)
		}
		return 0, fmt.Errorf("endpoint %s: %w", ep.Key, err)
	}
	s.byKey[ep.Key] = &ep
	s.ids[ep.ID] = ep.Key
	return ep.ID, nil
}

// Delete removes the record of k, if any.
func (s *Store) Delete(k Key) error {
	s.mu.Lock()
	ep, ok := s.byKey[k]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := os.Remove(s.path(k)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("endpoint %s: %w", k, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byKey, k)
	delete(s.ids, ep.ID)
	return nil
}

// freeID finds an unused ID from s.next on, so IDs of deleted endpoints are
// reused as late as possible (state keyed by a stale ID then meets nobody).
func (s *Store) freeID() (uint16, bool) {
	id := s.next
	for range 1 << 16 {
		if id != 0 {
			if _, used := s.ids[id]; !used {
				return id, true
			}
		}
		id++
	}
	return 0, false
}

// path is the record's file: a hash, because container IDs and interface
// names may hold any character the runtime allows.
func (s *Store) path(k Key) string {
	h := sha256.Sum256([]byte(k.Network + "\x00" + k.ContainerID + "\x00" + k.IfName))
	return filepath.Join(s.dir, hex.EncodeToString(h[:16])+".json")
}

// Dir is where the agent keeps endpoint records under its CNI state
// directory.
func Dir(stateDir string) string { return filepath.Join(stateDir, "endpoints") }
