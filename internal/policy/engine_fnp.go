package policy

import "github.com/fastpath-net/fastpath/internal/fpnetpol"

// UpsertFastpathPolicy records a FastpathNetworkPolicy or
// FastpathClusterwideNetworkPolicy. Its allows add to those of
// NetworkPolicies; its HTTP denies win over every allow.
func (e *Engine) UpsertFastpathPolicy(p *fpnetpol.Policy) {
	c := compileFastpath(p)
	e.upsert(c, c.name)
}

// DeleteFastpathPolicy forgets one; ns is "" for the clusterwide kind.
func (e *Engine) DeleteFastpathPolicy(ns, name string) {
	key := (&fpnetpol.Policy{Namespace: ns, Name: name}).Key()
	e.remove(key, ns, key)
}
