package deploy

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestDaemonSetMountsWhatTheConfigNames checks the DaemonSet against the
// ConfigMap it mounts: every host path an agent flag names (pins, cgroup,
// CNI socket, conflist, state) lies on a hostPath volume of that same host
// path, so it reaches the node (and, for the socket, the plugin the
// kubelet runs on the host); the init container installs fastpath-cni
// into the host's /opt/cni/bin; an upgrade surges (L7 listener hand-over);
// and the probes ask the agent's health
// server at the port it listens on.
func TestDaemonSetMountsWhatTheConfigNames(t *testing.T) {
	var ds appsv1.DaemonSet
	readStrict(t, "agent/daemonset.yaml", &ds)
	var cm corev1.ConfigMap
	readStrict(t, "agent/configmap.yaml", &cm)
	spec := ds.Spec.Template.Spec
	hostPaths := map[string]string{} // volume name -> host path
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	// onHost: the container path p is inside a mount of the host's same path.
	onHost := func(c corev1.Container, p string) bool {
		for _, m := range c.VolumeMounts {
			host, ok := hostPaths[m.Name]
			if ok && host == m.MountPath && (p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/")) {
				return true
			}
		}
		return false
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("%d containers and %d init containers; want the agent and install-cni", len(spec.Containers), len(spec.InitContainers))
	}
	agent := spec.Containers[0]
	for _, key := range []string{"bpffs-dir", "cgroup", "cni-conf-dir", "cni-state-dir"} {
		if p := cm.Data[key]; p == "" || !onHost(agent, p) {
			t.Errorf("ConfigMap %s=%q is not on a hostPath mount of the same host path in the agent container", key, p)
		}
	}
	if sock := cm.Data["cni-socket"]; sock == "" || !onHost(agent, filepath.Dir(sock)) {
		t.Errorf("cni-socket %q: its directory is not a hostPath mount, so fastpath-cni on the host cannot dial it", sock)
	}
	if sock := cm.Data["l7-handover-socket"]; sock == "" || !onHost(agent, filepath.Dir(sock)) {
		t.Errorf("l7-handover-socket %q: its directory is not a hostPath mount, so the next agent's pod cannot reach it", sock)
	}
	// The upgrade overlaps old and new agent (the L7 listener is handed
	// over): a surge pod, which a hostPort (any containerPort, with
	// hostNetwork) would keep from being scheduled beside the old one.
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.String() != "1" ||
		ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" {
		t.Errorf("updateStrategy %+v; want RollingUpdate with maxSurge 1 and maxUnavailable 0", ds.Spec.UpdateStrategy)
	}
	if spec.HostNetwork && len(agent.Ports) > 0 {
		t.Errorf("agent ports %v: with hostNetwork they are hostPorts, and the surge pod cannot be scheduled", agent.Ports)
	}
	for _, m := range agent.VolumeMounts {
		if hostPaths[m.Name] == "/sys/fs/bpf" && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional) {
			t.Errorf("bpffs mount %s: propagation %v; want Bidirectional so pins outlive the container", m.MountPath, m.MountPropagation)
		}
	}

	install := spec.InitContainers[0]
	if len(install.Command) != 3 || install.Command[1] != "install" || hostPathOf(install, hostPaths, install.Command[2]) != "/opt/cni/bin" {
		t.Errorf("init container %s: %v; want `fastpath-cni install DIR` with DIR the host's /opt/cni/bin", install.Name, install.Command)
	}
	if install.Image != agent.Image {
		t.Errorf("init container image %s, agent %s; want the same build", install.Image, agent.Image)
	}

	_, port, err := net.SplitHostPort(cm.Data["healthz-addr"])
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": agent.LivenessProbe, "readiness": agent.ReadinessProbe} {
		want := map[string]string{"liveness": "/livez", "readiness": "/healthz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != port {
			t.Errorf("%s probe %+v; want GET %s on the healthz-addr port %s", name, p, want, port)
		}
	}
}

// hostPathOf is the host path behind container path p, or "".
func hostPathOf(c corev1.Container, hostPaths map[string]string, p string) string {
	for _, m := range c.VolumeMounts {
		if m.MountPath == p {
			return hostPaths[m.Name]
		}
	}
	return ""
}

func readStrict(t *testing.T, rel string, into any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}
