package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The calls Gust makes for its users (callbacks of async calls) go where a
// user says. Left alone they would reach what only the gateway's host can
// reach: loopback services, the cloud's metadata endpoint (link-local),
// the private network. So such an address is refused unless the operator
// allows it (OutboundAllow): at enqueue when the URL names it literally,
// at every redirect hop, and at the dial itself, where the check sees the
// address actually dialed after name resolution, so a name that resolves
// (or is re-bound) to a refused address gets no further.

// errRefusedAddr marks a dial or redirect refused by the outbound rule.
var errRefusedAddr = errors.New("address refused for calls made for users")

// OutboundAllow lists the destinations that the outbound rule lets
// through although they are loopback, link-local, private, unspecified or
// multicast: networks (10.0.0.0/8), single addresses and host names. The
// zero value allows none.
type OutboundAllow struct {
	prefixes []netip.Prefix
	hosts    map[string]bool
	// ownPort, when set, lets loopback through except to the ports it
	// reports as Gust's own (WithLoopback).
	ownPort func(port uint16) bool
}

// WithLoopback returns a copy of a that also lets loopback destinations
// through, except to a port ownPort reports as one of Gust's own
// listeners (the gateway, NATS, a worker's listener): for the calls the
// operator makes, as admin, on the gateway's host.
func (a OutboundAllow) WithLoopback(ownPort func(port uint16) bool) OutboundAllow {
	a.ownPort = ownPort
	return a
}

// loopback says whether a loopback destination on port is let through.
func (a OutboundAllow) loopback(port uint16) bool {
	return a.ownPort != nil && !a.ownPort(port)
}

// ParseOutboundAllow parses a comma-separated list of networks, addresses
// and host names, as --callback-allow takes it.
func ParseOutboundAllow(list string) (OutboundAllow, error) {
	var a OutboundAllow
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return a, fmt.Errorf("callback allow list: %q is not a network such as 10.0.0.0/8", e)
			}
			a.prefixes = append(a.prefixes, p.Masked())
		default:
			if ip, err := netip.ParseAddr(e); err == nil {
				a.prefixes = append(a.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			if strings.ContainsAny(e, ":@ ") {
				return a, fmt.Errorf("callback allow list: %q is not a network, an address or a host name", e)
			}
			if a.hosts == nil {
				a.hosts = map[string]bool{}
			}
			a.hosts[strings.ToLower(strings.TrimSuffix(e, "."))] = true
		}
	}
	return a, nil
}

// String lists a in the form ParseOutboundAllow takes.
func (a OutboundAllow) String() string {
	var out []string
	for _, p := range a.prefixes {
		out = append(out, p.String())
	}
	for h := range a.hosts {
		out = append(out, h)
	}
	return strings.Join(out, ",")
}

func (a OutboundAllow) host(h string) bool {
	return a.hosts[strings.ToLower(strings.TrimSuffix(h, "."))]
}

func (a OutboundAllow) addr(ip netip.Addr) bool {
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

var (
	// sharedSpace is carrier-grade NAT space, where some clouds put
	// their metadata service (100.100.100.200).
	sharedSpace = netip.MustParsePrefix("100.64.0.0/10")
	// nat64 embeds an IPv4 address, which is what gets reached.
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	// Local NAT64 and 6to4 embed IPv4 addresses too, at other places;
	// no callback needs them.
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	// ipv4Compatible is the deprecated ::a.b.c.d form.
	ipv4Compatible = netip.MustParsePrefix("::/96")
)

// refusedAddr says why ip may not be dialed for a user, or "".
func refusedAddr(ip netip.Addr) string {
	ip = ip.Unmap()
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	switch {
	case !ip.IsValid():
		return "not an address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "a link-local address"
	case ip.IsPrivate(), sharedSpace.Contains(ip):
		return "a private address"
	case ip.IsUnspecified():
		return "an unspecified address"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	case nat64Local.Contains(ip), sixToFour.Contains(ip), ip.Is6() && ipv4Compatible.Contains(ip):
		return "an address that embeds an IPv4 address"
	case ip.Is4() && ip.As4()[0] == 0:
		return "an address of this host (0.0.0.0/8)"
	}
	return ""
}

// checkURL checks a URL that Gust is to call for a user: http or https,
// and a host that names no refused address literally (nor localhost),
// unless allowed. Names are checked again, resolved, when dialed.
func (a OutboundAllow) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("want an absolute http or https URL")
	}
	h := u.Hostname()
	if a.host(h) {
		return nil
	}
	port := urlPort(u)
	if ip, err := netip.ParseAddr(h); err == nil {
		if why := refusedAddr(ip); why != "" && !a.addr(ip.Unmap()) && !(ip.Unmap().IsLoopback() && a.loopback(port)) {
			return fmt.Errorf("%w: %s is %s", errRefusedAddr, u.Host, why)
		}
		return nil
	}
	lh := strings.ToLower(strings.TrimSuffix(h, "."))
	if (lh == "localhost" || strings.HasSuffix(lh, ".localhost")) && !a.loopback(port) {
		return fmt.Errorf("%w: %s is a loopback address", errRefusedAddr, u.Host)
	}
	if numericHost(lh) {
		// 2130706433, 127.1, 0x7f000001, "127.0.0.1.": resolvers read
		// these as addresses, which the dial would refuse anyway; refused
		// here, the caller learns it at once.
		return fmt.Errorf("%w: %s is an address in a form other than a dotted quad", errRefusedAddr, u.Host)
	}
	return nil
}

// control refuses the dial of a refused address that is not allowed: the
// address here is the one the connection goes to, after resolution.
func (a OutboundAllow) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", errRefusedAddr, address)
	}
	ip := ap.Addr().Unmap()
	if why := refusedAddr(ip); why != "" && !a.addr(ip) && !(ip.IsLoopback() && a.loopback(ap.Port())) {
		return fmt.Errorf("%w: %s is %s", errRefusedAddr, ap, why)
	}
	return nil
}

// urlPort is the port a URL leads to, its scheme's when it names none.
func urlPort(u *url.URL) uint16 {
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err == nil {
		return uint16(p)
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// maxRedirects bounds the redirects a callback follows.
const maxRedirects = 5

// client returns the HTTP client of calls made for users under a: each
// redirect hop is checked, and each dial, whatever name led to it; no
// proxy from the environment (it would dial in Gust's place, unchecked).
func (a OutboundAllow) client(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		if host, _, err := net.SplitHostPort(addr); err != nil || !a.host(host) {
			d.Control = a.control
		}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("%w: more than %d redirects", errRefusedAddr, maxRedirects)
			}
			return a.checkURL(req.URL)
		},
	}
}

// callbackAllow is the outbound rule of a callback: the operator's list,
// and for a call the admin made (admin) loopback too, except to Gust's
// own listeners.
func (s *Server) callbackAllow(admin bool) OutboundAllow {
	if !admin {
		return s.cfg.CallbackAllow
	}
	return s.cfg.CallbackAllow.WithLoopback(s.ownPort)
}

// ownPort reports whether port is one of Gust's listeners on this host:
// this gateway's (as configured and as bound) or one of Config.OwnPorts.
func (s *Server) ownPort(port uint16) bool {
	if slices.Contains(s.cfg.OwnPorts, port) {
		return true
	}
	if _, p, err := net.SplitHostPort(s.cfg.Listen); err == nil && p == strconv.Itoa(int(port)) {
		return true
	}
	return s.port.Load() == int32(port)
}

// numericHost reports whether h (lower case, without a trailing dot) is
// made only of numbers (decimal, or hex with 0x) and dots: an address
// written another way, since no top-level domain is numeric.
func numericHost(h string) bool {
	if h == "" {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return false
		}
		digits := strings.TrimPrefix(label, "0x")
		hex := digits != label
		for _, c := range digits {
			if !(c >= '0' && c <= '9' || hex && c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}
