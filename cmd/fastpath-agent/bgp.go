package main

import (
	"errors"
	"flag"
)

// errBGPMoved answers --enable-bgp: the speaker is its own binary, so the
// agent does not link GoBGP (it doubled the agent's size and resident
// pages). A ConfigMap or command line from before the move fails here,
// saying what to run instead, rather than silently advertising nothing.
var errBGPMoved = errors.New("--enable-bgp: BGP moved out of the agent: run fastpath-bgp on each node next to it " +
	"(deploy/bgp; its flags --bgp-listen-port and --bgp-secret-namespace are the same) and drop enable-bgp from the agent's configuration")

// addBGPFlags keeps --enable-bgp only to refuse it (checkBGP).
func addBGPFlags(fs *flag.FlagSet) *bool {
	return fs.Bool("enable-bgp", false, "removed: refused with a pointer to fastpath-bgp, the per-node BGP speaker that replaced it")
}

func checkBGP(enable *bool) error {
	if *enable {
		return errBGPMoved
	}
	return nil
}
