// Package firewall installs the host rules that keep function containers
// away from the host's own services: NATS, a worker's listener, the Docker
// API, anything else listening on every interface. It is the only package
// in Gust that talks to the kernel's nftables.
//
// The rules live in a table of Gust's own (family inet, so IPv4 and IPv6
// alike), which Install replaces whole in one transaction and Remove
// deletes whole: Docker's rules and the operator's are never touched.
// Function bridges are matched by the prefix of their interface names
// (internal/docker names every bridge it creates with one prefix):
//
//	chain input (hook input, priority filter): from a function bridge,
//	  accept established and related traffic (answers to the worker's
//	  calls), ICMPv6 (neighbour discovery), and new TCP connections to
//	  the allowed ports (the gateway's, so that functions call functions
//	  through its public routes); reject the rest.
//	chain forward (hook forward, priority filter - 1, before Docker's):
//	  from a function bridge, reject link-local and cloud metadata
//	  addresses, and connections the host translated (DNAT) to a published
//	  port of some container. (With Docker's userland proxy, its default,
//	  a function's connection to a published port reaches the proxy on
//	  the host instead, which the input chain covers; without it, the
//	  host translates it and this rule covers it. Published ports are not
//	  allowed even when they are allowed ports: the gateway's port is a
//	  port of the host's own.)
//
// Traffic between bridges, and between containers of one bridge, is
// Docker's to drop (its isolation chains and enable_icc=false); these
// rules add what Docker leaves open: the host itself.
package firewall

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// DefaultTable is the name of the nftables table (family inet) that holds
// Gust's rules.
const DefaultTable = "gust"

// Chains of the table.
const (
	ChainInput   = "input"
	ChainForward = "forward"
)

// blocked are the destinations that function containers may not reach
// through their host's routing: link-local addresses (where clouds serve
// instance metadata and credentials, 169.254.169.254) and the metadata
// addresses outside them (Alibaba's 100.100.100.200, AWS's IPv6
// fd00:ec2::254). IPv6 link-local (fe80::/10) is never routed, but a
// function must not reach the host's own link-local services either; the
// input chain covers those.
var blocked = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("100.100.100.200/32"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
}

// Config of the rules.
type Config struct {
	Table        string // default DefaultTable
	BridgePrefix string // interface name prefix of function bridges; required
	// AllowPorts are the TCP ports of the host that functions may open
	// connections to: the gateway's, so that functions call each other
	// through its public routes, as in OpenFaaS.
	AllowPorts []int
}

// ErrReplaced is returned by Remove when the table is no longer the one
// this Firewall installed (another process installed its own since): it
// is left to that process.
var ErrReplaced = errors.New("the firewall table was replaced by another process")

// Firewall is an installed table of rules.
type Firewall struct {
	cfg   Config
	owner string // in the comment of the table's first rule
	// rules counts the rules of each chain as installed: a table with
	// fewer (a flushed chain, a rule deleted) is installed again.
	rules map[string]int
}

// Install creates the table of cfg with its chains and rules, replacing a
// table of that name if there is one (a worker that restarts after a crash
// finds its old table), in one transaction: the host is never without
// rules in between. It needs CAP_NET_ADMIN and a kernel with nftables.
func Install(cfg Config) (*Firewall, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.BridgePrefix == "" {
		return nil, errors.New("firewall: bridge prefix: empty (it would match every interface)")
	}
	if len(cfg.BridgePrefix) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("firewall: bridge prefix %q: longer than an interface name", cfg.BridgePrefix)
	}
	for _, p := range cfg.AllowPorts {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("firewall: allowed port %d: not between 1 and 65535", p)
		}
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("firewall: %w", err)
	}
	f := &Firewall{cfg: cfg, owner: hex.EncodeToString(b[:])}
	if err := f.install(); err != nil {
		return nil, err
	}
	return f, nil
}

// install replaces the table with f's.
func (f *Firewall) install() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: netlink: %w", err)
	}
	t := f.table()
	// Add (a no-op if it exists), delete, add: the table is replaced
	// whether or not it was there, in one batch.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	f.addRules(c, t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: install table inet %s: %w", f.cfg.Table, err)
	}
	rules, err := ruleCounts(c, t)
	if err != nil {
		return err
	}
	f.rules = rules
	return nil
}

// ruleCounts counts the rules of each chain of t.
func ruleCounts(c *nftables.Conn, t *nftables.Table) (map[string]int, error) {
	out := map[string]int{}
	for _, ch := range []string{ChainInput, ChainForward} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: ch})
		if err != nil {
			return nil, fmt.Errorf("firewall: list rules of inet %s %s: %w", t.Name, ch, err)
		}
		out[ch] = len(rules)
	}
	return out, nil
}

// Ensure installs the table again if it is gone or incomplete, and
// reports whether it did: another process's Remove (a second worker on the
// host that stopped), a flush of the whole ruleset (`nft flush ruleset`, a
// firewall manager's reload) or of the table's chains (`nft flush table
// inet gust`), or a deleted rule must not leave the host open. A complete
// table that is there, whoever installed it, is left alone: two live
// workers do not take turns replacing each other's.
func (f *Firewall) Ensure() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("firewall: netlink: %w", err)
	}
	owner, err := tableOwner(c, f.cfg.Table)
	if err != nil {
		return false, err
	}
	if owner != "" && owner != "?" {
		rules, err := ruleCounts(c, f.table())
		if err != nil {
			return false, err
		}
		if maps.Equal(rules, f.rules) {
			return false, nil
		}
	}
	return true, f.install()
}

// Table is the name of the installed table (family inet).
func (f *Firewall) Table() string { return f.cfg.Table }

// Remove deletes the table, unless another process has replaced it since
// Install (ErrReplaced). A table already gone is not an error.
func (f *Firewall) Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: netlink: %w", err)
	}
	owner, err := tableOwner(c, f.cfg.Table)
	if err != nil {
		return err
	}
	switch owner {
	case "":
		return nil
	case f.owner, "?": // ours, or flushed (nobody's): Gust's by its name
	default:
		return fmt.Errorf("firewall: remove table inet %s: %w", f.cfg.Table, ErrReplaced)
	}
	c.DelTable(f.table())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: remove table inet %s: %w", f.cfg.Table, err)
	}
	return nil
}

// tableOwner returns the owner mark of the installed table name: "" when there
// is no such table.
func tableOwner(c *nftables.Conn, name string) (string, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return "", fmt.Errorf("firewall: list tables: %w", err)
	}
	i := slices.IndexFunc(tables, func(t *nftables.Table) bool { return t.Name == name })
	if i < 0 {
		return "", nil
	}
	rules, err := c.GetRules(tables[i], &nftables.Chain{Name: ChainInput})
	if err != nil {
		return "", fmt.Errorf("firewall: list rules of inet %s %s: %w", name, ChainInput, err)
	}
	for _, r := range rules {
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
			if owner, ok := cutOwner(s); ok {
				return owner, nil
			}
		}
	}
	// Not made by Install: nobody's.
	return "?", nil
}

const ownerPrefix = "gust owner "

func cutOwner(comment string) (string, bool) {
	if len(comment) > len(ownerPrefix) && comment[:len(ownerPrefix)] == ownerPrefix {
		return comment[len(ownerPrefix):], true
	}
	return "", false
}

func (f *Firewall) table() *nftables.Table {
	return &nftables.Table{Name: f.cfg.Table, Family: nftables.TableFamilyINet}
}

// addRules queues the chains and rules of the table t on c.
func (f *Firewall) addRules(c *nftables.Conn, t *nftables.Table) {
	accept := nftables.ChainPolicyAccept
	input := c.AddChain(&nftables.Chain{
		Name: ChainInput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	forward := c.AddChain(&nftables.Chain{
		Name: ChainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 1), Policy: &accept,
	})
	fromFn := iifPrefix(f.cfg.BridgePrefix)
	add := func(ch *nftables.Chain, comment string, exprs ...[]expr.Any) {
		all := slices.Concat(append([][]expr.Any{fromFn}, exprs...)...)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all, UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
	}

	add(input, ownerPrefix+f.owner, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	add(input, "neighbour discovery", l4proto(unix.IPPROTO_ICMPV6), verdict(expr.VerdictAccept))
	for _, p := range f.cfg.AllowPorts {
		add(input, "allowed port", l4proto(unix.IPPROTO_TCP), tcpDport(p), verdict(expr.VerdictAccept))
	}
	add(input, "nothing else of the host", reject())

	for _, p := range blocked {
		add(forward, "link-local and metadata", daddr(p), reject())
	}
	add(forward, "no published port of the host", dnat(), reject())
}

// The expressions of the rules, as nft compiles them: each loads a value
// into register 1 and compares it.

func iifPrefix(prefix string) []expr.Any {
	// A compare shorter than the register matches a prefix ("gust-*").
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)},
	}
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is IPS_DST_NAT of the conntrack status bits.
const ipsDstNAT = 1 << 5

func dnat() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func tcpDport(port int) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(port))},
	}
}

func daddr(p netip.Prefix) []expr.Any {
	proto, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if p.Addr().Is6() {
		proto, off = unix.NFPROTO_IPV6, 24
	}
	addr := p.Masked().Addr().AsSlice()
	mask := make([]byte, len(addr))
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(len(addr))},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
	}
}

func verdict(kind expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind}}
}

// reject counts the packet and answers it with "administratively
// prohibited", so that a function's connection fails at once instead of
// timing out.
func reject() []expr.Any {
	return []expr.Any{
		&expr.Counter{},
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED},
	}
}
