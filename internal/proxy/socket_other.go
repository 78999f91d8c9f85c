//go:build !unix

package proxy

import "net"

// socketIdle cannot look without a read here: a kept connection is not
// trusted, and each request dials.
func socketIdle(net.Conn) bool { return false }
