package gateway

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRefusedAddr(t *testing.T) {
	for _, tt := range []struct {
		addr    string
		refused bool
	}{
		{"127.0.0.1", true}, {"127.5.6.7", true}, {"::1", true},
		{"169.254.169.254", true}, {"fe80::1", true},
		{"10.1.2.3", true}, {"172.16.0.1", true}, {"192.168.1.1", true}, {"fd00::1", true},
		{"100.100.100.200", true}, // shared address space: a cloud's metadata
		{"0.0.0.0", true}, {"::", true}, {"0.1.2.3", true},
		{"224.0.0.1", true}, {"ff02::1", true},
		{"::ffff:127.0.0.1", true}, {"64:ff9b::a9fe:a9fe", true}, // 169.254.169.254 behind NAT64
		{"93.184.216.34", false}, {"2606:2800:220:1::", false}, {"64:ff9b::5db8:d822", false},
	} {
		if got := refusedAddr(netip.MustParseAddr(tt.addr)) != ""; got != tt.refused {
			t.Errorf("refusedAddr(%s) refuses: %v, want %v", tt.addr, got, tt.refused)
		}
	}
}

func TestOutboundAllow(t *testing.T) {
	a, err := ParseOutboundAllow(" 10.0.0.0/8, 127.0.0.1 ,callback.internal.,")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://10.2.3.4/cb", true},
		{"http://127.0.0.1:9/cb", true},
		{"http://127.0.0.2:9/cb", false},
		{"https://Callback.Internal/cb", true},
		{"http://[::1]/cb", false},
		{"http://169.254.169.254/latest/meta-data", false},
		{"http://localhost:8080/", false},
		{"http://api.localhost/", false},
		{"http://example.com/cb", true}, // resolved and checked when dialed
		{"ftp://example.com/", false},
		{"/relative", false},
	} {
		u, _ := url.Parse(tt.url)
		if err := a.checkURL(u); (err == nil) != tt.ok {
			t.Errorf("checkURL(%s) = %v, want ok %v", tt.url, err, tt.ok)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "user@host", "a b"} {
		if _, err := ParseOutboundAllow(bad); err == nil {
			t.Errorf("ParseOutboundAllow(%q) took it", bad)
		}
	}
}

// listen127 serves h on addr (a loopback address of the test's own).
func listen127(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestOutboundClient: the dial refuses a loopback address reached through
// a name (what DNS rebinding would do), and a redirect from an allowed
// address to one that is not allowed is not followed.
func TestOutboundClient(t *testing.T) {
	var hit atomic.Int32
	target := listen127(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit.Add(1) }))
	_, port, _ := net.SplitHostPort(target.Listener.Addr().String())

	t.Run("NameResolvingToLoopback", func(t *testing.T) {
		c := OutboundAllow{}.client(5 * time.Second)
		_, err := c.Post("http://localhost:"+port+"/cb", "text/plain", strings.NewReader("x"))
		if !errors.Is(err, errRefusedAddr) {
			t.Errorf("POST through localhost: %v, want the address refused", err)
		}
		if hit.Load() != 0 {
			t.Errorf("the loopback server got %d requests, want 0", hit.Load())
		}
	})
	t.Run("RedirectToLoopback", func(t *testing.T) {
		var redirected atomic.Int32
		redir := listen127(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			redirected.Add(1)
			http.Redirect(w, r, "http://127.0.0.1:"+port+"/stolen", http.StatusTemporaryRedirect)
		}))
		// Only the redirecting server's address is allowed.
		a, _ := ParseOutboundAllow("127.0.0.2")
		_, err := a.client(5*time.Second).Post(redir.URL+"/cb", "text/plain", strings.NewReader("x"))
		if !errors.Is(err, errRefusedAddr) {
			t.Errorf("POST redirected to loopback: %v, want the address refused", err)
		}
		if redirected.Load() != 1 || hit.Load() != 0 {
			t.Errorf("redirector got %d, target %d requests; want 1 and 0", redirected.Load(), hit.Load())
		}
	})
	t.Run("Allowed", func(t *testing.T) {
		a, _ := ParseOutboundAllow("127.0.0.1")
		resp, err := a.client(5*time.Second).Post(target.URL+"/cb", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatalf("POST to an allowed address: %v", err)
		}
		resp.Body.Close()
		if hit.Load() != 1 {
			t.Errorf("the allowed server got %d requests, want 1", hit.Load())
		}
	})
}

// TestOutboundAllow_WithLoopback: loopback opens to every port but the
// own ones, at the URL check and at the dial; other refused addresses stay
// refused.
func TestOutboundAllow_WithLoopback(t *testing.T) {
	a := OutboundAllow{}.WithLoopback(func(p uint16) bool { return p == 4222 || p == 8080 })
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:9000/cb", true},
		{"http://localhost:9000/cb", true},
		{"http://[::1]:9000/cb", true},
		{"http://127.0.0.1/cb", true}, // port 80
		{"http://127.0.0.1:4222/", false},
		{"http://localhost:8080/system/functions", false},
		{"http://169.254.169.254/latest/meta-data/", false},
		{"http://10.0.0.1:9000/", false},
	} {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.checkURL(u); (err == nil) != tt.ok {
			t.Errorf("checkURL(%s) = %v, want ok %v", tt.url, err, tt.ok)
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
			addr := netip.AddrPortFrom(ip, urlPort(u)).String()
			if err := a.control("tcp", addr, nil); (err == nil) != tt.ok {
				t.Errorf("control(%s) = %v, want ok %v", addr, err, tt.ok)
			}
		}
	}
	for _, h := range []string{"2130706433", "127.1", "0x7f000001", "127.0.0.1.", "0", "[::127.0.0.1]", "[64:ff9b:1::7f00:1]", "[2002:7f00:1::]"} {
		if err := (OutboundAllow{}).checkURL(&url.URL{Scheme: "http", Host: h}); !errors.Is(err, errRefusedAddr) {
			t.Errorf("checkURL(http://%s) = %v, want refused", h, err)
		}
	}
	if err := (OutboundAllow{}).checkURL(&url.URL{Scheme: "http", Host: "cb.example.com"}); err != nil {
		t.Errorf("checkURL(http://cb.example.com) = %v, want ok", err)
	}
	if err := (OutboundAllow{}).control("tcp", "127.0.0.1:9000", nil); err == nil {
		t.Error("without WithLoopback a loopback dial is let through")
	}
}
