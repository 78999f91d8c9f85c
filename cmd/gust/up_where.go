package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"text/tabwriter"
)

// PrintWhere writes where everything of a started `gust up` is, for the
// person who just ran it: gateway, dashboard, metrics, NATS, the data
// directory and where the passwords are kept. It never prints a password,
// only the file or variable that holds it.
func (m *UpMain) PrintWhere(w io.Writer) {
	gw, all := listenURL(m.GatewayAddr())
	data := absPath(m.DataDir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Gust is up:")
	if all {
		fmt.Fprintf(tw, "  gateway\t%s\t(listening on all interfaces, %s)\n", gw, m.GatewayAddr())
	} else {
		fmt.Fprintf(tw, "  gateway\t%s\n", gw)
	}
	fmt.Fprintf(tw, "  dashboard\t%s/ui/\t(user admin)\n", gw)
	fmt.Fprintf(tw, "  metrics\t%s/metrics\t(Prometheus, user admin; docs/metrics.md)\n", gw)
	fmt.Fprintf(tw, "  NATS\t%s\t(publishers: user events)\n", m.nats.Server.ClientURL())
	fmt.Fprintf(tw, "  data\t%s\n", data)
	fmt.Fprintf(tw, "  admin password\t%s\n", m.adminPasswordSource(data))
	fmt.Fprintf(tw, "  events password\t%s\n", secretWhere(m.NATSFlags.eventsFile, "GUST_EVENTS_PASSWORD", filepath.Join(data, eventsPasswordFile)))
	fmt.Fprintf(tw, "  try\tgust new hello && gust build -f stack.yml && gust deploy -f stack.yml && gust invoke hello\n")
	tw.Flush()
}

// adminPasswordSource says where the admin password came from. The flag
// naming its file is not kept past startup, so it is told apart from the
// other sources by its value: the data directory's file and the
// environment are checked first, as adminPassword does.
func (m *UpMain) adminPasswordSource(data string) string {
	file := filepath.Join(data, adminPasswordFile)
	if v, err := readPasswordFile(file); err == nil && v == m.Gateway.AdminPassword {
		if absPath(defaultDataDir()) == data {
			return "in " + file + " (the CLI on this machine reads it)"
		}
		return "in " + file + " (for the CLI: GUST_DATA=" + data + ", or gust login)"
	}
	if v := os.Getenv("GUST_ADMIN_PASSWORD"); v != "" && v == m.Gateway.AdminPassword {
		return "from $GUST_ADMIN_PASSWORD"
	}
	return "in the file given with --admin-password-file"
}

// secretWhere says where a password comes from, in the order secretSource
// reads it: the flag's file, the variable, the data directory's file.
func secretWhere(flagFile, env, dataFile string) string {
	switch {
	case flagFile != "":
		return "in " + absPath(flagFile)
	case os.Getenv(env) != "":
		return "from $" + env
	}
	return "in " + dataFile
}

// listenURL turns a listener's address into a URL a browser on this
// machine can open; all is true when it listens on every interface.
func listenURL(addr string) (url string, all bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr, false
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host, all = "127.0.0.1", true
	}
	return "http://" + net.JoinHostPort(host, port), all
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// printWhere prints where a started role is when it can tell (gust up).
func printWhere(m any) {
	if p, ok := m.(interface{ PrintWhere(io.Writer) }); ok {
		p.PrintWhere(os.Stderr)
	}
}
