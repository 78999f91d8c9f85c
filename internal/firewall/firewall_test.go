package firewall

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// MustNftables skips tb when this process cannot read the kernel's
// nftables (not root, or no nftables).
func MustNftables(tb testing.TB) *nftables.Conn {
	tb.Helper()
	c, err := nftables.New()
	if err == nil {
		_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	}
	if err != nil {
		if os.Getenv("GUST_REQUIRE_FIREWALL") != "" {
			tb.Fatalf("nftables not usable, and GUST_REQUIRE_FIREWALL is set: %v", err)
		}
		tb.Skipf("nftables not usable here: %v", err)
	}
	return c
}

// testConfig is a table and a bridge prefix of this test's own, so that
// the rules match no one else's bridges; cleanup deletes the table.
func testConfig(tb testing.TB, ports ...int) Config {
	tb.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	id := hex.EncodeToString(b)
	cfg := Config{Table: "gust_test_" + id, BridgePrefix: "gx" + id, AllowPorts: ports}
	tb.Cleanup(func() {
		c, err := nftables.New()
		if err != nil {
			return
		}
		c.DelTable(&nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet})
		_ = c.Flush() // gone already when the test removed it
	})
	return cfg
}

// rules reads the rules of chain in table through the library and renders
// each in nft's words, with its comment.
func rules(t *testing.T, c *nftables.Conn, table, chain string) []string {
	t.Helper()
	rs, err := c.GetRules(&nftables.Table{Name: table, Family: nftables.TableFamilyINet}, &nftables.Chain{Name: chain})
	if err != nil {
		t.Fatalf("rules of %s %s: %v", table, chain, err)
	}
	var out []string
	for _, r := range rs {
		s := render(t, r.Exprs)
		if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && !strings.HasPrefix(c, ownerPrefix) {
			s += " comment " + fmt.Sprintf("%q", c)
		}
		out = append(out, s)
	}
	return out
}

// render turns the expressions the kernel holds back into nft syntax, for
// the expressions this package writes.
func render(t *testing.T, exprs []expr.Any) string {
	t.Helper()
	var words []string
	var load expr.Any // what register 1 holds
	var mask []byte
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta, *expr.Payload, *expr.Ct:
			load, mask = e, nil
		case *expr.Bitwise:
			mask = e.Mask
		case *expr.Cmp:
			words = append(words, renderCmp(t, load, mask, e))
		case *expr.Counter:
			words = append(words, "counter")
		case *expr.Reject:
			words = append(words, fmt.Sprintf("reject type %d code %d", e.Type, e.Code))
		case *expr.Verdict:
			if e.Kind != expr.VerdictAccept {
				t.Fatalf("verdict %v: not written by this package", e.Kind)
			}
			words = append(words, "accept")
		default:
			t.Fatalf("expression %T: not written by this package", e)
		}
	}
	return strings.Join(words, " ")
}

func renderCmp(t *testing.T, load expr.Any, mask []byte, c *expr.Cmp) string {
	op := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= "}[c.Op]
	switch l := load.(type) {
	case *expr.Meta:
		switch l.Key {
		case expr.MetaKeyIIFNAME:
			return "iifname " + op + string(c.Data) + "*"
		case expr.MetaKeyL4PROTO:
			return "meta l4proto " + op + map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_ICMPV6: "ipv6-icmp"}[c.Data[0]]
		case expr.MetaKeyNFPROTO:
			return "meta nfproto " + op + map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[c.Data[0]]
		}
	case *expr.Payload:
		if l.Base == expr.PayloadBaseTransportHeader && l.Offset == 2 && l.Len == 2 {
			return "tcp dport " + op + fmt.Sprint(binary.BigEndian.Uint16(c.Data))
		}
		if l.Base == expr.PayloadBaseNetworkHeader && (l.Offset == 16 && l.Len == 4 || l.Offset == 24 && l.Len == 16) {
			addr, _ := netip.AddrFromSlice(c.Data)
			bits := 0
			for _, b := range mask {
				for ; b != 0; b <<= 1 {
					bits++
				}
			}
			fam := "ip"
			if l.Len == 16 {
				fam = "ip6"
			}
			return fam + " daddr " + op + netip.PrefixFrom(addr, bits).String()
		}
	case *expr.Ct:
		switch l.Key {
		case expr.CtKeySTATE:
			var names []string
			m := binary.NativeEndian.Uint32(mask)
			for _, s := range []struct {
				bit  uint32
				name string
			}{{expr.CtStateBitESTABLISHED, "established"}, {expr.CtStateBitRELATED, "related"}} {
				if m&s.bit != 0 {
					names = append(names, s.name)
				}
			}
			return "ct state " + strings.Join(names, ",")
		case expr.CtKeySTATUS:
			if binary.NativeEndian.Uint32(mask) == ipsDstNAT {
				return "ct status dnat"
			}
		}
	}
	t.Fatalf("compare of %T %+v: not written by this package", load, load)
	return ""
}

// TestInstall_Rules reads the installed table back through the library:
// its chains hook where they should, and its rules say what the package
// documents, among them the reject of link-local (cloud metadata)
// addresses, checked here by reading the rule and never by dialling.
func TestInstall_Rules(t *testing.T) {
	c := MustNftables(t)
	cfg := testConfig(t, 8080, 31112)
	f, err := Install(cfg)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	hooks := map[string]string{}
	for _, ch := range chains {
		if ch.Table.Name == cfg.Table {
			hooks[ch.Name] = fmt.Sprintf("type %s hook %d priority %d policy %d", ch.Type, *ch.Hooknum, *ch.Priority, *ch.Policy)
		}
	}
	want := map[string]string{
		ChainInput:   fmt.Sprintf("type filter hook %d priority 0 policy %d", unix.NF_INET_LOCAL_IN, nftables.ChainPolicyAccept),
		ChainForward: fmt.Sprintf("type filter hook %d priority -1 policy %d", unix.NF_INET_FORWARD, nftables.ChainPolicyAccept),
	}
	for name, w := range want {
		if hooks[name] != w {
			t.Errorf("chain %s: got %q, want %q", name, hooks[name], w)
		}
	}
	if len(hooks) != len(want) {
		t.Errorf("chains: got %v, want %v", hooks, want)
	}

	p := cfg.BridgePrefix
	reject := fmt.Sprintf("counter reject type %d code %d", unix.NFT_REJECT_ICMPX_UNREACH, unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED)
	wantInput := []string{
		"iifname " + p + "* ct state established,related accept",
		"iifname " + p + "* meta l4proto ipv6-icmp accept comment \"neighbour discovery\"",
		"iifname " + p + "* meta l4proto tcp tcp dport 8080 accept comment \"allowed port\"",
		"iifname " + p + "* meta l4proto tcp tcp dport 31112 accept comment \"allowed port\"",
		"iifname " + p + "* " + reject + " comment \"nothing else of the host\"",
	}
	if got := rules(t, c, cfg.Table, ChainInput); !slices.Equal(got, wantInput) {
		t.Errorf("input rules:\n got %q\nwant %q", got, wantInput)
	}
	got := rules(t, c, cfg.Table, ChainForward)
	metadata := "iifname " + p + "* meta nfproto ipv4 ip daddr 169.254.0.0/16 " + reject + " comment \"link-local and metadata\""
	if !slices.Contains(got, metadata) {
		t.Errorf("forward rules: no link-local reject %q in\n%q", metadata, got)
	}
	wantForward := []string{
		metadata,
		"iifname " + p + "* meta nfproto ipv4 ip daddr 100.100.100.200/32 " + reject + " comment \"link-local and metadata\"",
		"iifname " + p + "* meta nfproto ipv6 ip6 daddr fe80::/10 " + reject + " comment \"link-local and metadata\"",
		"iifname " + p + "* meta nfproto ipv6 ip6 daddr fd00:ec2::254/128 " + reject + " comment \"link-local and metadata\"",
		"iifname " + p + "* ct status dnat " + reject + " comment \"no published port of the host\"",
	}
	if !slices.Equal(got, wantForward) {
		t.Errorf("forward rules:\n got %q\nwant %q", got, wantForward)
	}

	if err := f.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
}

// TestInstall_Replaces: installing again replaces the table whole (a
// worker restarted after a crash), the replaced installation's Remove
// leaves the new table alone, and the new one's Remove deletes it.
func TestInstall_Replaces(t *testing.T) {
	c := MustNftables(t)
	cfg := testConfig(t, 8080)
	old, err := Install(cfg)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	cfg.AllowPorts = []int{9090}
	cur, err := Install(cfg)
	if err != nil {
		t.Fatalf("Install over an installed table: %v", err)
	}
	input := rules(t, c, cfg.Table, ChainInput)
	if n := len(input); n != 4 || !strings.Contains(input[2], "dport 9090") {
		t.Errorf("input rules after a second Install: got %q, want the second's 4 rules only", input)
	}
	if owner, err := tableOwner(c, cfg.Table); err != nil || owner != cur.owner {
		t.Errorf("owner: got %q, %v, want the second installation's %q", owner, err, cur.owner)
	}
	if err := old.Remove(); !errors.Is(err, ErrReplaced) {
		t.Errorf("Remove of the replaced installation: got %v, want ErrReplaced", err)
	}
	if owner, _ := tableOwner(c, cfg.Table); owner != cur.owner {
		t.Fatalf("the replaced installation's Remove removed the table")
	}
	if err := cur.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == cfg.Table {
			t.Errorf("table inet %s still there after Remove", cfg.Table)
		}
	}
	if err := cur.Remove(); err != nil {
		t.Errorf("Remove of a table already gone: got %v, want nil", err)
	}
}

// TestEnsure: a table removed behind the installation's back (another
// worker's Remove, a flush of the ruleset) is installed again; one that is
// there is left alone, even when another installation replaced it.
func TestEnsure(t *testing.T) {
	c := MustNftables(t)
	cfg := testConfig(t, 8080)
	f, err := Install(cfg)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	want := rules(t, c, cfg.Table, ChainInput)
	if again, err := f.Ensure(); err != nil || again {
		t.Errorf("Ensure of an installed table: got %v, %v, want false, nil", again, err)
	}
	c.DelTable(&nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if again, err := f.Ensure(); err != nil || !again {
		t.Fatalf("Ensure of a deleted table: got %v, %v, want true, nil", again, err)
	}
	if got := rules(t, c, cfg.Table, ChainInput); !slices.Equal(got, want) {
		t.Errorf("input rules installed again:\n got %q\nwant %q", got, want)
	}
	if owner, err := tableOwner(c, cfg.Table); err != nil || owner != f.owner {
		t.Errorf("owner of the table installed again: got %q, %v, want %q", owner, err, f.owner)
	}
	// A flushed table (its chains emptied, the owner mark gone) and a
	// table missing one rule are installed again too.
	c.FlushTable(&nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if again, err := f.Ensure(); err != nil || !again {
		t.Fatalf("Ensure of a flushed table: got %v, %v, want true, nil", again, err)
	}
	if got := rules(t, c, cfg.Table, ChainInput); !slices.Equal(got, want) {
		t.Errorf("input rules after a flush and Ensure:\n got %q\nwant %q", got, want)
	}
	tbl := &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet}
	in, err := c.GetRules(tbl, &nftables.Chain{Name: ChainInput, Table: tbl})
	if err != nil || len(in) == 0 {
		t.Fatalf("input rules: %v, %v", len(in), err)
	}
	if err := c.DelRule(in[len(in)-1]); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if again, err := f.Ensure(); err != nil || !again {
		t.Fatalf("Ensure of a table missing its last input rule: got %v, %v, want true, nil", again, err)
	}
	if got := rules(t, c, cfg.Table, ChainInput); !slices.Equal(got, want) {
		t.Errorf("input rules after a deleted rule and Ensure:\n got %q\nwant %q", got, want)
	}
	other, err := Install(Config{Table: cfg.Table, BridgePrefix: cfg.BridgePrefix, AllowPorts: []int{9090}})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := f.Ensure(); err != nil || again {
		t.Errorf("Ensure of a table another installation replaced: got %v, %v, want false, nil", again, err)
	}
	if owner, _ := tableOwner(c, cfg.Table); owner != other.owner {
		t.Errorf("Ensure took the table back from the installation that replaced it")
	}
}

func TestInstall_Invalid(t *testing.T) {
	for name, cfg := range map[string]Config{
		"NoPrefix":   {},
		"LongPrefix": {BridgePrefix: "a-very-long-prefix"},
		"Port0":      {BridgePrefix: "gust-", AllowPorts: []int{0}},
		"Port65536":  {BridgePrefix: "gust-", AllowPorts: []int{65536}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Install(cfg); err == nil {
				t.Errorf("Install(%+v): got nil, want an error", cfg)
			}
		})
	}
}
