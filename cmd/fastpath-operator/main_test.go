package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	for _, c := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--kubeconfig", "k", "--leader-elect-identity", "pod-1"}, ""},
		{[]string{"--leader-elect=false", "--leader-elect-identity", ""}, ""},
		{[]string{"--leader-elect-identity", ""}, "--leader-elect-identity"},
		{[]string{"--leader-elect-renew-deadline", "20s"}, "renew deadline (20s) < lease duration (15s)"},
		{[]string{"--leader-elect-retry-period", "0s"}, "0 < retry period"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--log-level", "loud"}, "--log-level"},
	} {
		o, err := parseFlags(c.args, io.Discard)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%q: %v", c.args, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%q: err = %v, want %q", c.args, err, c.wantErr)
		case err == nil && c.args[0] == "--kubeconfig" && (o.kubeconfig != "k" || o.election.Identity != "pod-1" || o.election.LeaseDuration != 15*time.Second):
			t.Errorf("%q: parsed %+v", c.args, o)
		}
	}
}
