package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
)

// The verbs of access control: login, keys, namespace, secret. They call
// the gateway's /system/namespace, /system/keys and /system/secrets routes
// through gateway.Client, with the credentials found as for every verb.

var loginCommand = &Command{
	Name:  "login",
	Usage: "[--gateway URL] [--password-stdin | --key-stdin]",
	Short: "check credentials against a gateway and save them for the other verbs",
	Long: `Saves the gateway URL and its credentials in the user config,
$XDG_CONFIG_HOME/gust/config.json (or ~/.config/gust/config.json), mode
0600, after checking them: the gateway must not answer 401 to a GET of
/system/functions. The gateway saved becomes the default of --gateway.

The credentials are the admin password (user "admin") or a namespace's key:
read from stdin with --password-stdin or --key-stdin, e.g.

  cat admin-password | gust login --gateway http://gust.example:8080 --password-stdin
  echo "$KEY" | gust login --key-stdin

Without either, the ones found as for every verb are saved: $GUST_PASSWORD
or $GUST_KEY, or, for a gateway on this machine, the admin password that
'gust up' generated in the default data directory ($GUST_DATA or .gust).`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		fs.StringVar(&cf.gateway, "gateway", "", "gateway URL (default $GUST_GATEWAY, else the one saved, else "+defaultGateway+")")
		passwordStdin := fs.Bool("password-stdin", false, "read the admin password from stdin")
		keyStdin := fs.Bool("key-stdin", false, "read a namespace's key from stdin")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected arguments: %v", args)
			}
			if *passwordStdin && *keyStdin {
				return usagef("give --password-stdin or --key-stdin, not both")
			}
			cfg, path, err := readUserConfig()
			if err != nil {
				return err
			}
			gw := resolveGateway(cf.gateway, cfg)
			var creds credentials
			switch {
			case *passwordStdin || *keyStdin:
				line, err := readSecretLine(os.Stdin)
				if err != nil {
					return err
				}
				if *passwordStdin {
					creds.Password = line
				} else {
					creds.Key = line
				}
			default:
				// Not what is saved already: a login checks something new.
				creds = resolveCredentials(credentials{}, gw, userConfig{})
				if creds.empty() {
					return usagef("no credentials: give --password-stdin or --key-stdin, or set $GUST_PASSWORD or $GUST_KEY")
				}
			}
			if creds.Password != "" {
				creds.Key = ""
			}
			if err := newClient(gw, creds).CheckCredentials(ctx); err != nil {
				var ge *gust.Error
				if errors.As(err, &ge) && ge.Code == gust.EUNAUTHORIZED {
					return fmt.Errorf("%s refused the credentials (401); nothing saved", gw)
				}
				return err
			}
			if cfg.Auths == nil {
				cfg.Auths = map[string]credentials{}
			}
			cfg.Gateway = gw
			cfg.Auths[gw] = creds
			if err := writeUserConfig(path, cfg); err != nil {
				return err
			}
			who := "admin"
			if creds.Key != "" {
				who = "key " + gust.KeyIDOfToken(creds.Key)
			}
			fmt.Printf("logged in to %s as %s; saved in %s\n", gw, who, path)
			return nil
		}
	},
}

// readSecretLine reads one credential from r: its first line, without the
// line end (what `echo` or a file with a final newline gives).
func readSecretLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read stdin: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", usagef("nothing on stdin")
	}
	return line, nil
}

var keysCommand = &Command{
	Name:  "keys",
	Usage: "create NAMESPACE NAME | list | rm ID",
	Short: "create, list or revoke the keys of namespaces",
	Long: `A key acts in its namespace only: its functions, secrets, async calls,
dead letters, invocations and billing. Send it as "Authorization: Bearer
KEY", or give it to this CLI with --key, $GUST_KEY or 'gust login --key-stdin'.

  create NAMESPACE NAME  prints the new key on stdout: the gateway shows it
                         this once and keeps only its hash
  list                   the keys' ids, names, namespaces and creation
                         times, never the keys themselves
  rm ID                  revokes a key at once, on every gateway`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.registerAuth(fs)
		asJSON := fs.Bool("json", false, "list: print JSON")
		return func(ctx context.Context, args []string) error {
			c := cf.client()
			switch {
			case len(args) == 3 && args[0] == "create":
				k, err := c.CreateKey(ctx, args[1], args[2])
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "created key %s (%s) of namespace %s; it is shown this once:\n", k.ID, k.Name, k.Namespace)
				fmt.Println(k.Key)
				return nil
			case len(args) == 1 && args[0] == "list":
				keys, err := c.Keys(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					return printJSON(keys)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tNAMESPACE\tCREATED")
				for _, k := range keys {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Namespace, formatTime(k.Created))
				}
				return tw.Flush()
			case len(args) == 2 && args[0] == "rm":
				if err := c.DeleteKey(ctx, args[1]); err != nil {
					return err
				}
				fmt.Printf("revoked key %s\n", args[1])
				return nil
			}
			return usagef("want create NAMESPACE NAME, list or rm ID")
		}
	},
}

var namespaceCommand = &Command{
	Name:  "namespace",
	Usage: "create NAME [--quota-instances N] [--quota-concurrency N] [--quota-memory Q] [--label K=V]... | list | rm NAME",
	Short: "create, list or remove namespaces (tenants) and their quotas",
	Long: `A namespace is a tenant: its functions, secrets, keys, async calls, dead
letters and bills are its own. openfaas-fn always exists.

  create NAME  with optional quotas (0 or absent: no bound):
               --quota-instances   warm instances of all its functions
               --quota-concurrency calls in flight; past it a call answers 429
               --quota-memory      memory of its instances, e.g. 2Gi
  list         the namespaces and their quotas
  rm NAME      removes a namespace`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.registerAuth(fs)
		var q gust.Quota
		fs.IntVar(&q.Instances, "quota-instances", 0, "create: bound on the namespace's instances")
		fs.IntVar(&q.Concurrency, "quota-concurrency", 0, "create: bound on the namespace's calls in flight")
		fs.StringVar(&q.Memory, "quota-memory", "", "create: bound on the memory of the namespace's instances, e.g. 2Gi")
		labels, annotations := kvFlag{}, kvFlag{}
		fs.Var(labels, "label", "create: label K=V (repeatable)")
		fs.Var(annotations, "annotation", "create: annotation K=V (repeatable)")
		asJSON := fs.Bool("json", false, "list: print JSON")
		return func(ctx context.Context, args []string) error {
			c := cf.client()
			switch {
			case len(args) == 2 && args[0] == "create":
				if q.Instances < 0 || q.Concurrency < 0 {
					return usagef("quotas are whole numbers >= 0")
				}
				ns := gust.Namespace{Name: args[1], Labels: labels, Annotations: annotations}
				if q != (gust.Quota{}) {
					ns.Quota = &q
				}
				if err := c.CreateNamespace(ctx, ns); err != nil {
					return err
				}
				fmt.Printf("created namespace %s\n", args[1])
				return nil
			case len(args) == 1 && args[0] == "list":
				names, err := c.Namespaces(ctx)
				if err != nil {
					return err
				}
				// The listing has names only (OpenFaaS's shape): each
				// namespace's quota is a call of its own. One the
				// credentials may not read (a key's, of another
				// namespace) shows its name alone.
				nss := make([]gust.Namespace, 0, len(names))
				for _, name := range names {
					ns, err := c.Namespace(ctx, name)
					if err != nil {
						ns = gust.Namespace{Name: name}
					}
					nss = append(nss, ns)
				}
				if *asJSON {
					return printJSON(nss)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tINSTANCES\tCONCURRENCY\tMEMORY\tCREATED")
				for _, ns := range nss {
					var qq gust.Quota
					if ns.Quota != nil {
						qq = *ns.Quota
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ns.Name, quotaInt(qq.Instances), quotaInt(qq.Concurrency), orDash(qq.Memory), formatTime(ns.Created))
				}
				return tw.Flush()
			case len(args) == 2 && args[0] == "rm":
				if err := c.DeleteNamespace(ctx, args[1]); err != nil {
					return err
				}
				fmt.Printf("removed namespace %s\n", args[1])
				return nil
			}
			return usagef("want create NAME, list or rm NAME")
		}
	},
}

var secretCommand = &Command{
	Name:  "secret",
	Usage: "create NAME [--namespace NS] (--from-literal V | --from-file F | < value) [--update] | list | rm NAME",
	Short: "create, list or remove the secrets functions read as files",
	Long: `A function whose deploy lists a secret reads it as the file
` + gust.SecretsDir + `/NAME. Values are stored encrypted and never shown
back: list gives the names only.

  create NAME  the value from --from-literal, --from-file or stdin (as is:
               a final newline is kept); --update replaces an existing one
  list         the names of a namespace's secrets
  rm NAME      removes a secret`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		literal := fs.String("from-literal", "", "create: the value (visible in the process list: prefer --from-file or stdin)")
		file := fs.String("from-file", "", "create: read the value from this file")
		update := fs.Bool("update", false, "create: replace an existing secret (PUT)")
		asJSON := fs.Bool("json", false, "list: print JSON")
		return func(ctx context.Context, args []string) error {
			c := cf.client()
			switch {
			case len(args) == 2 && args[0] == "create":
				value, err := secretValue(*literal, *file)
				if err != nil {
					return err
				}
				s := gateway.Secret{Name: args[1], Namespace: cf.namespace}
				if utf8.Valid(value) {
					s.Value = string(value)
				} else {
					s.RawValue = value
				}
				if err := c.CreateSecret(ctx, s, *update); err != nil {
					return err
				}
				verb := "created"
				if *update {
					verb = "updated"
				}
				fmt.Printf("%s secret %s\n", verb, args[1])
				return nil
			case len(args) == 1 && args[0] == "list":
				ss, err := c.Secrets(ctx, cf.namespace)
				if err != nil {
					return err
				}
				if *asJSON {
					return printJSON(ss)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tNAMESPACE")
				for _, s := range ss {
					fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.Namespace)
				}
				return tw.Flush()
			case len(args) == 2 && args[0] == "rm":
				if err := c.DeleteSecret(ctx, cf.namespace, args[1]); err != nil {
					return err
				}
				fmt.Printf("removed secret %s\n", args[1])
				return nil
			}
			return usagef("want create NAME, list or rm NAME")
		}
	},
}

// maxSecretBytes bounds a secret read from a file or stdin.
const maxSecretBytes = 1 << 20

// secretValue is the value of `gust secret create`: the literal, the
// file, or stdin when it is not a terminal.
func secretValue(literal, file string) ([]byte, error) {
	switch {
	case literal != "" && file != "":
		return nil, usagef("give --from-literal or --from-file, not both")
	case literal != "":
		return []byte(literal), nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("secret value: %w", err)
		}
		return b, nil
	}
	if st, err := os.Stdin.Stat(); err != nil || st.Mode()&os.ModeCharDevice != 0 {
		return nil, usagef("give the value with --from-literal, --from-file or on stdin")
	}
	b, err := io.ReadAll(io.LimitReader(os.Stdin, maxSecretBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(b) > maxSecretBytes {
		return nil, usagef("a secret holds at most %d bytes", maxSecretBytes)
	}
	if len(b) == 0 {
		return nil, usagef("nothing on stdin")
	}
	return b, nil
}

func quotaInt(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}
