package lab

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// Up builds the lab, or re-checks it when it is already up. bin is the
// directory holding fastpath-agent, fastpathctl and fastpath-lab.
func Up(bin string, out io.Writer) error {
	if st, err := loadState(); err == nil && alive(st.Processes["agent"]) {
		fmt.Fprintln(out, "lab is already up; checking it again")
		return Report(bin, st, out)
	}
	if err := Down(out); err != nil { // leftovers of a lab that died
		return err
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return err
	}
	st := &State{Processes: map[string]int{}, Started: time.Now()}
	star, err := nettopo.NewStarNamed(Base, append([]string{"client"}, Backends...)...)
	if err != nil {
		return err
	}
	st.Namespaces = append(st.Namespaces, star.Node.Name)
	for _, h := range star.Hosts {
		st.Namespaces = append(st.Namespaces, h.NS.Name)
	}
	st.Interfaces = star.NodeInterfaces()
	if err := st.save(); err != nil {
		return err
	}
	if err := startServers(bin, star, st); err != nil {
		return err
	}
	if err := writeServices(star); err != nil {
		return err
	}
	if err := startAgent(bin, star, st); err != nil {
		return err
	}
	if err := st.save(); err != nil {
		return err
	}
	return Report(bin, st, out)
}

func startServers(bin string, star *nettopo.Star, st *State) error {
	for _, name := range Backends {
		h := star.Host(name)
		pid, err := spawn(filepath.Join(bin, "fastpath-lab"), name,
			"serve", "--netns", h.NS.Path(), "--name", name, "--addr", h.Addr.String())
		if err != nil {
			return err
		}
		st.Processes[name] = pid
	}
	return nil
}

// writeServices writes the demo services: web on the VIP (HTTP on 80,
// whoami on 7 over TCP and on 53 over UDP), and a service with no backends.
func writeServices(star *nettopo.Star) error {
	var b strings.Builder
	fmt.Fprintf(&b, "services:\n  - name: web\n    namespace: demo\n    clusterIP: %s\n", VIP)
	b.WriteString("    ports:\n")
	b.WriteString("      - {name: http, port: 80, protocol: TCP, targetPort: 8000}\n")
	b.WriteString("      - {name: whoami, port: 7, protocol: TCP, targetPort: 8080}\n")
	b.WriteString("      - {name: whoami-udp, port: 53, protocol: UDP, targetPort: 8080}\n")
	b.WriteString("    backends:\n")
	for _, name := range Backends {
		fmt.Fprintf(&b, "      - address: %s\n", star.Host(name).Addr)
	}
	fmt.Fprintf(&b, "  - name: empty\n    namespace: demo\n    clusterIP: %s\n", EmptyVIP)
	b.WriteString("    ports:\n      - {name: http, port: 80, protocol: TCP, targetPort: 8000}\n    backends: []\n")
	return os.WriteFile(filepath.Join(StateDir, "services.yaml"), []byte(b.String()), 0o644)
}

func startAgent(bin string, star *nettopo.Star, st *State) error {
	if err := os.MkdirAll(CgroupDir, 0o755); err != nil {
		return fmt.Errorf("cgroup %s: %w", CgroupDir, err)
	}
	pid, err := spawn(filepath.Join(bin, "fastpath-agent"), "agent",
		"--bpffs-dir", PinDir,
		"--netns", star.Node.Path(),
		"--interfaces", strings.Join(st.Interfaces, ","),
		"--cgroup", CgroupDir,
		"--services-file", filepath.Join(StateDir, "services.yaml"))
	if err != nil {
		return err
	}
	st.Processes["agent"] = pid
	return nil
}

// spawn starts a long-lived process in its own session, logging to
// StateDir/<name>.log, and returns its PID; it outlives `make lab`.
func spawn(path, name string, args ...string) (int, error) {
	logf, err := os.OpenFile(filepath.Join(StateDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}
