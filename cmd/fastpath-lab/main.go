// Command fastpath-lab runs the local lab behind `make lab`: fp- network
// namespaces, the real fastpath agent, demo backends and services.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fastpath-net/fastpath/internal/lab"
)

const usage = `usage: fastpath-lab up | down | serve --netns PATH --name NAME --addr IP | probe --netns PATH --addr IP:PORT`

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
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "up":
		return lab.Up(binDir(), os.Stdout)
	case "down":
		return lab.Down(os.Stdout)
	case "serve":
		return lab.Serve(*nsPath, *name, *addr)
	case "probe":
		out, err := lab.Probe(*nsPath, *addr)
		if err == nil {
			fmt.Println(out)
		}
		return err
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
