//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// socketIdle reports whether conn has nothing to read, not even its end,
// without waiting: a peek that would block.
func socketIdle(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // one look, never a wait
	})
	return err == nil && rerr == syscall.EAGAIN
}
