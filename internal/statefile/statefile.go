// Package statefile writes the agent's small state files (IPAM leases,
// endpoint records) so that they survive a crash: a file is on disk, and
// its name in its directory, before the write returns.
package statefile

import (
	"errors"
	"os"
	"path/filepath"
)

// Create writes a new file at path and fails if it exists: the file's
// existence is the claim (an IPAM lease). A failed Create leaves no file.
func Create(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if err := finish(f, data); err != nil {
		_ = os.Remove(path)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// Replace writes path atomically: readers see the old content or the new,
// never a part.
func Replace(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	err = finish(f, data)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// finish writes data, syncs and closes f.
func finish(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// SyncDir makes the directory's entries (new, renamed, removed files)
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
