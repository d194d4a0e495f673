package policymap

import (
	"slices"
	"strings"

	"github.com/fastpath-net/fastpath/internal/policy"
)

// Rules numbers the rules of policies for fp_policy values, so a verdict
// record can name the rule that allowed a flow without strings in the
// kernel. Numbers are never reused while the agent runs.
type Rules struct {
	byRef map[policy.RuleRef]uint32
	refs  []policy.RuleRef
	// ProxyPort is written into entries with HTTP rules (FlagL7); 0 when
	// the node runs no L7 proxy, which makes the datapath drop their flows.
	ProxyPort uint16
}

// Cookie returns r's number, numbering it if new (from 1; 0 is no rule).
func (rs *Rules) Cookie(r policy.RuleRef) uint32 {
	if rs.byRef == nil {
		rs.byRef = map[policy.RuleRef]uint32{}
	}
	if c, ok := rs.byRef[r]; ok {
		return c
	}
	rs.refs = append(rs.refs, r)
	rs.byRef[r] = uint32(len(rs.refs))
	return rs.byRef[r]
}

// Rule returns the rule a cookie names.
func (rs *Rules) Rule(cookie uint32) (policy.RuleRef, bool) {
	if cookie == 0 || int(cookie) > len(rs.refs) {
		return policy.RuleRef{}, false
	}
	return rs.refs[cookie-1], true
}

// Keys returns the fp_policy contents of one endpoint. An entry allowed by
// several rules carries the first of them by name.
func Keys(epID uint16, ep *policy.EndpointPolicy, rules *Rules) map[PolicyKey]PolicyValue {
	out := map[PolicyKey]PolicyValue{}
	for k, refs := range ep.Entries {
		first := slices.MinFunc(refs, func(a, b policy.RuleRef) int { return strings.Compare(a.String(), b.String()) })
		v := PolicyValue{Cookie: rules.Cookie(first)}
		if ep.L7[k] != nil {
			v.Flags, v.ProxyPort = FlagL7, rules.ProxyPort
		}
		for _, pk := range PolicyKeys(epID, k) {
			// Two entries can share a key (one range inside another on
			// the same identity): either rule allows it, but one that
			// needs the proxy keeps its flag (its denies must hold).
			if old, dup := out[pk]; !dup || v.Flags&FlagL7 != 0 && old.Flags&FlagL7 == 0 {
				out[pk] = v
			}
		}
	}
	return out
}
