package docker

import "syscall"

// Magic numbers of statfs(2) for file systems held in memory.
const (
	tmpfsMagic = 0x01021994
	ramfsMagic = 0x858458f6
)

// inMemory reports whether path is on a tmpfs or ramfs.
func inMemory(path string) (bool, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return false, err
	}
	t := uint32(st.Type) // int64 or int32 by architecture; the magics fit 32 bits
	return t == tmpfsMagic || t == ramfsMagic, nil
}
