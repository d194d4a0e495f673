package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFlags: each bad flag is refused naming it, and run exits 2 without
// touching the cluster.
func TestFlags(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	ns := t.TempDir() // any existing path stands in for a netns file
	kube := []string{"--kubeconfig", "k.yaml", "--node-name", "n1"}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"defaults", kube, ""},
		{"no kubeconfig outside a pod", []string{"--node-name", "n1"}, "--kubeconfig"},
		{"port 0", append([]string{"--bgp-listen-port", "0"}, kube...), "--bgp-listen-port"},
		{"port too big", append([]string{"--bgp-listen-port", "70000"}, kube...), "--bgp-listen-port"},
		{"no secret namespace", append([]string{"--bgp-secret-namespace", ""}, kube...), "--bgp-secret-namespace"},
		{"netns missing", append([]string{"--netns", "fp-no-such-ns-for-bgp"}, kube...), "--netns"},
		{"netns path", append([]string{"--netns", ns}, kube...), ""},
		{"log level", append([]string{"--log-level", "loud"}, kube...), "--log-level"},
		{"stray argument", append(kube, "extra"), `"extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.port != 179 || cfg.secretNamespace != "kube-system" || cfg.nodeName != "n1" {
					t.Fatalf("config %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
			}
		})
	}
	var out bytes.Buffer
	if code := run([]string{"--bgp-listen-port", "0", "--kubeconfig", filepath.Join(ns, "none")}, &out); code != 2 || !strings.Contains(out.String(), "--bgp-listen-port") {
		t.Fatalf("run: exit %d, %q", code, out.String())
	}
}

// TestDaemonSetDocumentsEveryFlag: deploy/bgp/daemonset.yaml names every
// flag of fastpath-bgp (from its -help, so a new flag is covered), as an
// argument or as a "#   name:" comment, and its arguments parse.
func TestDaemonSetDocumentsEveryFlag(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/bgp/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var help bytes.Buffer
	if _, err := parseFlags([]string{"-help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v", err)
	}
	flags := regexp.MustCompile(`(?m)^  -(\S+)`).FindAllStringSubmatch(help.String(), -1)
	if len(flags) < 6 {
		t.Fatalf("found only %d flags in -help:\n%s", len(flags), help.String())
	}
	for _, m := range flags {
		arg := regexp.MustCompile(`(?m)^\s*- --` + regexp.QuoteMeta(m[1]) + `=`).Match(raw)
		comment := regexp.MustCompile(`(?m)^#\s+` + regexp.QuoteMeta(m[1]) + `:`).Match(raw)
		if !arg && !comment {
			t.Errorf("flag --%s is not documented in deploy/bgp/daemonset.yaml", m[1])
		}
	}
	var args []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- (--\S+=\S+)$`).FindAllStringSubmatch(string(raw), -1) {
		args = append(args, strings.ReplaceAll(m[1], "$(NODE_NAME)", "node-1"))
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1") // in a pod
	if cfg, err := parseFlags(args, io.Discard); err != nil || cfg.nodeName != "node-1" {
		t.Fatalf("the DaemonSet's arguments %q: %+v, %v", args, cfg, err)
	}
}
