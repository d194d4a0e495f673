package datapath

import "golang.org/x/sys/unix"

const bpfFSMagic = 0xcafe4a11

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return uint32(st.Type) == bpfFSMagic
}
