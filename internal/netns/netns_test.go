package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newNamespace makes a network namespace with its loopback up and a TCP
// listener on it that answers every line with the line; it returns a path
// to the namespace, the listener's address and a count of the
// connections it accepted. Making a namespace takes root.
func newNamespace(t *testing.T) (path, addr string, accepted *atomic.Int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making a network namespace takes root")
	}
	type made struct {
		ns  *os.File
		ln  net.Listener
		err error
	}
	ch := make(chan made, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- made{err: err}
			return
		}
		defer self.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- made{err: err}
			return
		}
		ns, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		var ln net.Listener
		if err == nil {
			if err = loopbackUp(); err == nil {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
			}
		}
		// Back home, or the thread ends with this goroutine.
		if serr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); serr == nil {
			runtime.UnlockOSThread()
		} else if err == nil {
			err = serr
		}
		ch <- made{ns, ln, err}
	}()
	m := <-ch
	if m.err != nil {
		t.Fatalf("make a network namespace: %v", m.err)
	}
	t.Cleanup(func() { _ = m.ln.Close(); _ = m.ns.Close() })
	accepted = new(atomic.Int64)
	go func() {
		for {
			c, err := m.ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					_, _ = c.Write([]byte(line))
				}
			}()
		}
	}()
	return fmt.Sprintf("/proc/self/fd/%d", m.ns.Fd()), m.ln.Addr().String(), accepted
}

// loopbackUp sets the calling thread's namespace's loopback interface up.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// TestDial: a connection dialed in another namespace reaches the listener
// on that namespace's loopback (which the same address in this process's
// namespace does not), carries data both ways, and leaves every thread of
// the process in the process's own namespace.
func TestDial(t *testing.T) {
	path, addr, accepted := newNamespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	for i := range 20 {
		c, err := Dial(ctx, &d, path, addr)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		msg := fmt.Sprintf("ping %d\n", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("answer: %q, %v; want %q", got, err, msg)
		}
		_ = c.Close()
	}
	if n := accepted.Load(); n != 20 {
		t.Errorf("the namespace's listener accepted %d connections, want 20", n)
	}
	// The same address here is not the namespace's listener.
	if c, err := d.DialContext(ctx, "tcp", addr); err == nil {
		_ = c.Close()
	}
	if n := accepted.Load(); n != 20 {
		t.Errorf("a dial in this namespace reached the other's listener")
	}
	mustAllThreadsHome(t)
}

// mustAllThreadsHome fails unless every thread of the process is in the
// process's network namespace (that of its main thread).
func mustAllThreadsHome(t *testing.T) {
	t.Helper()
	home, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ns, err := os.Readlink(task)
		if err != nil {
			continue // the thread ended meanwhile
		}
		if ns != home {
			t.Errorf("%s is in %s, not in the process's %s", task, ns, home)
		}
	}
}

// TestDial_Errors: a namespace that cannot be opened, and a port nobody
// listens on in the namespace, fail with errors that name them; neither
// leaves a thread elsewhere.
func TestDial_Errors(t *testing.T) {
	path, addr, _ := newNamespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	missing := filepath.Join(t.TempDir(), "no-such-namespace")
	if _, err := Dial(ctx, &d, missing, addr); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing namespace: %v", err)
	}
	host, _, _ := net.SplitHostPort(addr)
	closed := net.JoinHostPort(host, "1")
	if _, err := Dial(ctx, &d, path, closed); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("port nobody listens on: %v", err)
	}
	mustAllThreadsHome(t)
}
