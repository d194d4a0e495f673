package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// applyConfigDir sets flags from dir, one file per flag named after it
// (the keys of the fastpath-agent ConfigMap, mounted as a volume), except
// the flags given on the command line, which win. A file's whole content
// is the value, one trailing newline dropped. Files starting with "." are
// the kubelet's bookkeeping (..data, ..2024_...) and are skipped. A file
// naming no flag is an error, so a typo in the ConfigMap does not pass
// silently as a default.
func applyConfigDir(fs *flag.FlagSet, dir string) error {
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("--config-dir: %w", err)
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		if name == "config-dir" || fs.Lookup(name) == nil {
			errs = append(errs, fmt.Errorf("--config-dir %s: file %q names no agent flag", dir, name))
			continue
		}
		if onCommandLine[name] {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, fmt.Errorf("--config-dir: %w", err))
			continue
		}
		if err := fs.Set(name, strings.TrimSuffix(string(data), "\n")); err != nil {
			errs = append(errs, fmt.Errorf("--config-dir %s: --%s=%q: %w", dir, name, data, err))
		}
	}
	return errors.Join(errs...)
}
