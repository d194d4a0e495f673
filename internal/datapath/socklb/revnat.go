package socklb

import "github.com/fastpath-net/fastpath/internal/datapath/lbmap"

// RevNatKey mirrors struct fp_sock_rev_nat_key: one socket and the backend
// it was given.
type RevNatKey struct {
	Cookie uint64
	Addr   lbmap.Addr
	Port   uint16
	_      [3]uint16
}

// RevNatValue mirrors struct fp_sock_rev_nat: the frontend that socket asked
// for.
type RevNatValue struct {
	Addr     lbmap.Addr
	Port     uint16
	Scope    uint8 // of the service entry used (lbmap.Scope*)
	_        uint8
	RevNatID uint32
}
