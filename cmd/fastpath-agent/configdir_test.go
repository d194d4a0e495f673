package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const configMapPath = "../../deploy/agent/configmap.yaml"

// agentFlags are the flags of the real FlagSet, read from its -help, so a
// flag added by anyone later is covered without touching this test.
func agentFlags(t *testing.T) []string {
	t.Helper()
	var help bytes.Buffer
	if _, _, err := parseFlags([]string{"-help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v", err)
	}
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^  -(\S+)`).FindAllStringSubmatch(help.String(), -1) {
		out = append(out, m[1])
	}
	if len(out) < 20 {
		t.Fatalf("found only %d flags in -help:\n%s", len(out), help.String())
	}
	return out
}

// TestConfigMapDocumentsEveryFlag: deploy/agent/configmap.yaml names every
// agent flag, as a key or as a "#   name:" comment; every key is a flag;
// and its data, mounted as --config-dir, starts the agent's configuration.
func TestConfigMapDocumentsEveryFlag(t *testing.T) {
	raw, err := os.ReadFile(configMapPath)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(raw, &cm); err != nil {
		t.Fatalf("%s: %v", configMapPath, err)
	}
	flags := agentFlags(t)
	known := map[string]bool{}
	for _, f := range flags {
		known[f] = true
		_, isKey := cm.Data[f]
		commented := regexp.MustCompile(`(?m)^\s*#\s*` + regexp.QuoteMeta(f) + `:`).Match(raw)
		if !isKey && !commented {
			t.Errorf("flag --%s is not documented in %s: add it as a key (with the value the DaemonSet uses) or as a comment \"# %s: what it does\"", f, configMapPath, f)
		}
	}
	dir := t.TempDir()
	for k, v := range cm.Data {
		if !known[k] {
			t.Errorf("%s: key %q names no agent flag (the agent would refuse to start)", configMapPath, k)
		}
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// As in a pod: in-cluster configuration, --node-name from the DaemonSet.
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	cfg, _, err := parseFlags([]string{"--config-dir", dir, "--node-name", "node-1"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("the ConfigMap's data as --config-dir: %v", err)
	}
	if cfg.Kubernetes == nil || cfg.Kubernetes.NodeName != "node-1" || cfg.Ops.MetricsAddr != cm.Data["metrics-addr"] || cfg.Cgroup != cm.Data["cgroup"] {
		t.Errorf("configuration from the ConfigMap: %+v", cfg)
	}
}

// TestConfigDir: files set flags, the command line wins, and a file that
// names no flag, or a bad value, is an error naming it.
func TestConfigDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, val string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(val), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("services-file", "s.yaml\n")
	write("ct-max", "1000")
	write("log-level", "debug")
	write("..data", "kubelet bookkeeping")
	cfg, level, err := parseFlags([]string{"--config-dir", dir, "--ct-max", "2000"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServicesFile != "s.yaml" || cfg.Sizes.CT != 2000 || level.String() != "DEBUG" {
		t.Errorf("services-file %q ct-max %d level %v; want s.yaml (file), 2000 (command line), DEBUG (file)", cfg.ServicesFile, cfg.Sizes.CT, level)
	}
	write("ct-maximum", "1")
	if _, _, err := parseFlags([]string{"--config-dir", dir}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `"ct-maximum" names no agent flag`) {
		t.Errorf("unknown file: err %v", err)
	}
	os.Remove(filepath.Join(dir, "ct-maximum"))
	write("metrics-addr", "localhost:x")
	if _, _, err := parseFlags([]string{"--config-dir", dir}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Errorf("bad value: err %v", err)
	}
}
