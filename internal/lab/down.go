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

// Down stops the lab's processes (by the PIDs it recorded), and removes its
// pins, cgroup and namespaces. It is safe to run when nothing is up.
func Down(out io.Writer) error {
	var errs []error
	if st, err := loadState(); err == nil {
		for name, pid := range st.Processes {
			if err := stop(pid); err != nil {
				errs = append(errs, fmt.Errorf("stop %s (pid %d): %w", name, pid, err))
			}
		}
	}
	errs = append(errs, datapath.Uninstall(PinDir))
	if err := os.Remove(CgroupDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove cgroup %s: %w", CgroupDir, err))
	}
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
