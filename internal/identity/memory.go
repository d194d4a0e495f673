package identity

// Memory is an allocator without the API: known identities (e.g. read from
// the cluster) keep their numbers, new label sets get the next free number.
// For tests and for tools that compute from a snapshot.
type Memory struct {
	byLabels map[string]ID
	used     map[ID]bool
	next     ID
}

// NewMemory numbers new label sets from start.
func NewMemory(start ID) *Memory {
	return &Memory{byLabels: map[string]ID{}, used: map[ID]bool{}, next: start}
}

// Set records an existing identity.
func (m *Memory) Set(l Labels, id ID) {
	m.byLabels[l.String()] = id
	m.used[id] = true
}

// Identity returns l's identity, numbering it if new.
func (m *Memory) Identity(l Labels) ID {
	k := l.String()
	if id, ok := m.byLabels[k]; ok {
		return id
	}
	for m.used[m.next] {
		m.next++
	}
	m.Set(l, m.next)
	return m.next
}
