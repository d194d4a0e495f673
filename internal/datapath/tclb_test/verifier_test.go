package tclb_test

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// The verifier's work is a proxy for how close the program is to its
// limits. A change that multiplies it (a loop or a select that makes the
// verifier fork, as the first SCTP CRC update did: >1M instructions) should
// fail here, not on a customer's kernel. Today: about 58,000 and
// 51,500 for the two roles, with timestamp translation (the TCP option
// walk is a bpf_loop, tcpts.h; 52,500 for internal before), the clash
// ports' second range and the
// retake of a same-connection tombstone in the port search's 32 tries
// (39,700 and 29,600 before them, fp_ct_retake is a global function or it
// would be 20,000 more), with the NodePort reply redirect and the
// loadBalancerSourceRanges lookup (25,900 and 28,800 before them), tuple
// clashes and stale reply entries (22,900 before those, 10,700 before
// masquerading and scopes, 9,300 before session affinity); the port search of masquerading is a global function,
// verified once (snat.h), or it alone would be 20,000 more, and so is the
// look at a reply entry's flow (fp_ct_twin_state, ct.h). The stack is
// nearer its limit than the instructions: 384 bytes in the main frame, and
// 496 of 512 in the deepest call chain (main + the SCTP CRC's global
// function, frames rounded to 16 bytes).
const verifierBudget = 60_000

func TestVerifierBudget(t *testing.T) {
	testpriv.Require(t)
	for name, role := range map[string]uint32{"internal": roleInternal, "external": roleExternal} {
		t.Run(name, func(t *testing.T) {
			spec, err := bpfobj.LoadTclb()
			if err != nil {
				t.Fatal(err)
			}
			if err := spec.Variables[bpfobj.TclbVarFpIfaceRole].Set(role); err != nil {
				t.Fatal(err)
			}
			// Unpinned copies of the maps: nothing to clean up.
			for _, m := range spec.Maps {
				m.Pinning = ebpf.PinNone
			}
			coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
				Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
			})
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			defer coll.Close()
			log := coll.Programs[bpfobj.TclbProgFpTcLb].VerifierLog
			m := regexp.MustCompile(`processed (\d+) insns`).FindStringSubmatch(log)
			if m == nil {
				t.Fatalf("no instruction count in the verifier log:\n%s", log)
			}
			n, _ := strconv.Atoi(m[1])
			t.Logf("verifier: %s", log)
			if n > verifierBudget {
				t.Errorf("verifier processed %d instructions, budget %d", n, verifierBudget)
			}
		})
	}
}
