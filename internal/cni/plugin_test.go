package cni

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestPluginStaysLean: fastpath-cni runs once per pod and verb, so every
// package it links costs start-up time on the pod's critical path. net/http
// tripled its CPU per exec once; the Kubernetes client would do worse.
func TestPluginStaysLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../cmd/fastpath-cni").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"net/http", "k8s.io/", "crypto/tls", "github.com/cilium/ebpf", "github.com/vishvananda/netlink"} {
			if pkg == banned || strings.HasPrefix(pkg, banned) {
				t.Errorf("fastpath-cni links %s", pkg)
			}
		}
	}
}

func TestParseConf(t *testing.T) {
	for _, tc := range []struct {
		stdin string
		code  uint // 0: valid
		msg   string
	}{
		{stdin: `{"cniVersion":"1.1.0","name":"n","type":"fastpath-cni"}`},
		{stdin: `{"cniVersion":"1.1.0","name":"n","type":"fastpath-cni","mtu":1450,"socket":"/s"}`},
		{stdin: `{"cniVersion":"1.1.0","name":"n",`, code: types.ErrDecodingFailure, msg: "cannot decode"},
		{stdin: `{"name":"n","mtu":"1450"}`, code: types.ErrDecodingFailure, msg: "cannot decode"},
		{stdin: `{"name":"n","mtu":100}`, code: types.ErrInvalidNetworkConfig, msg: "mtu 100"},
		{stdin: `{"name":"n","timeoutSeconds":-1}`, code: types.ErrInvalidNetworkConfig, msg: "timeoutSeconds"},
		{stdin: `{"name":"n","ipam":{"type":"host-local"}}`, code: types.ErrUnsupportedField, msg: "ipam"},
	} {
		conf, err := parseConf([]byte(tc.stdin))
		if tc.code == 0 {
			if err != nil || conf.Socket == "" || conf.TimeoutSeconds != 60 {
				t.Errorf("%s: %+v, %v", tc.stdin, conf, err)
			}
			continue
		}
		var e *types.Error
		if !errors.As(err, &e) || e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) {
			t.Errorf("%s: error %v, want code %d naming %q", tc.stdin, err, tc.code, tc.msg)
		}
	}
}
