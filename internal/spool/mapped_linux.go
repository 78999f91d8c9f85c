package spool

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// mapSegment gives the segment file f size bytes, allocated on disk, and
// maps them shared and writable. The blocks are reserved first
// (fallocate) because a store into a mapped page the filesystem cannot
// back kills the process with SIGBUS, where a full disk must be an error
// of Append instead; a filesystem that cannot reserve them is written to
// with write(2).
func mapSegment(f *os.File, size int) ([]byte, error) {
	fd := int(f.Fd())
	if err := syscall.Fallocate(fd, 0, 0, int64(size)); err != nil {
		return nil, &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
	mem, err := syscall.Mmap(fd, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, &os.PathError{Op: "mmap", Path: f.Name(), Err: err}
	}
	return mem, nil
}

func unmapSegment(mem []byte) error { return syscall.Munmap(mem) }

// prefault makes mem's pages present and writable (MADV_POPULATE_WRITE,
// Linux 5.14 and later; an error elsewhere). A store into a page of a
// shared file mapping that is not yet so faults, and on a virtual machine
// one fault costs as much as a dozen records' copies: done ahead, in bulk,
// it costs a third of that and is off the appending caller's path.
func prefault(mem []byte) error { return unix.Madvise(mem, unix.MADV_POPULATE_WRITE) }
