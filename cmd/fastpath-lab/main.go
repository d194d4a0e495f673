// Command fastpath-lab runs the local lab behind `make lab`: fp- network
// namespaces, the real fastpath agent, demo backends and services.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fastpath-net/fastpath/internal/lab"
	"github.com/fastpath-net/fastpath/internal/routing"
)

const usage = `usage: fastpath-lab up [--nodes N] [--routing-mode native|vxlan] | down | serve --netns PATH --name NAME --addr IP`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "fastpath-lab: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%s", usage)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the lab creates network namespaces and loads BPF: run it as root")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	nsPath := fs.String("netns", "", "network namespace path")
	name := fs.String("name", "", "backend name")
	addr := fs.String("addr", "", "address")
	nodes := fs.Int("nodes", 2, "number of nodes")
	mode := fs.String("routing-mode", "native", "how pods reach other nodes: native or vxlan")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "up":
		return lab.Up(context.Background(), lab.Options{Nodes: *nodes, RoutingMode: routing.Mode(*mode), Bin: binDir()}, os.Stdout)
	case "down":
		return lab.Down(os.Stdout)
	case "serve":
		return lab.Serve(*nsPath, *name, *addr)
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

// binDir is where the other fastpath binaries sit: next to this one.
func binDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(exe)
}
