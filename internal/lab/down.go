package lab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// Down stops the lab's processes (by the PIDs it recorded, agents first),
// and removes its pins, namespaces and state. It is safe to run when
// nothing is up.
func Down(out io.Writer) error {
	var errs []error
	if st, err := loadState(); err == nil {
		for _, pass := range []func(string) bool{
			func(n string) bool { return strings.HasPrefix(n, "agent-") },
			func(n string) bool { return !isControlPlane(n) },
			func(string) bool { return true },
		} {
			for name, p := range st.Processes {
				if pass(name) {
					if err := stop(p); err != nil {
						errs = append(errs, fmt.Errorf("stop %s (pid %d): %w", name, p.PID, err))
					}
				}
			}
		}
	}
	errs = append(errs, datapath.Uninstall(PinDir))
	for _, ns := range labNamespaces() {
		errs = append(errs, nettopo.DeleteNS(ns))
	}
	if err := os.RemoveAll(StateDir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintln(out, "lab is down")
	return nil
}

func isControlPlane(name string) bool {
	return name == "etcd" || name == "kube-apiserver" || name == "kube-controller-manager"
}

// labNamespaces lists the existing namespaces that belong to the lab.
func labNamespaces() []string {
	b, _ := exec.Command("ip", "netns", "list").Output()
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		name, _, _ := strings.Cut(line, " ")
		if strings.HasPrefix(name, Base+"-") {
			out = append(out, name)
		}
	}
	return out
}
