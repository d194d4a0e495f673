package identity

// Memory is an allocator without the API: known identities (e.g. read from
// the cluster) keep their numbers, new label sets get the next free number.
// For tests and for tools that compute from a snapshot.
type Memory struct {
	byLabels map[string]ID
	next     ID
}

// NewMemory numbers new label sets from start.
func NewMemory(start ID) *Memory { return &Memory{byLabels: map[string]ID{}, next: start} }

// Set records an existing identity.
func (m *Memory) Set(l Labels, id ID) { m.byLabels[l.String()] = id }

// Identity returns l's identity, numbering it if new.
func (m *Memory) Identity(l Labels) ID {
	k := l.String()
	if id, ok := m.byLabels[k]; ok {
		return id
	}
	for m.taken(m.next) {
		m.next++
	}
	m.byLabels[k] = m.next
	m.next++
	return m.byLabels[k]
}

func (m *Memory) taken(id ID) bool {
	for _, v := range m.byLabels {
		if v == id {
			return true
		}
	}
	return false
}
