package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

var publishCommand = &Command{
	Name:  "publish",
	Usage: "SUBJECT [DATA]  (DATA from stdin when absent)",
	Short: "publish a message on a NATS subject (triggers functions whose topic matches)",
	Long: `Publishes straight to NATS: by default the embedded server of 'gust up'
(nats://127.0.0.1:4222 unless its --nats-listen says otherwise). With
--request, waits for the reply of a function triggered by the subject and
prints it (request/reply serverless).

NATS needs credentials: outside publishers are user "events", which may
publish on trigger subjects only. Give them in the URL
(nats://events:PASSWORD@host:4222), or in a file with --creds (a line
"events:PASSWORD", or a NATS .creds file), else $GUST_EVENTS_PASSWORD is
the password of user events, else the events-password file that gust up
keeps in the default data directory.`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		nats := fs.String("nats", envOr("GUST_NATS", "nats://127.0.0.1:4222"), "NATS URL, may carry credentials: nats://events:PASSWORD@host:port; tls://host:port for TLS ($GUST_NATS)")
		creds := fs.String("creds", envOr("GUST_NATS_CREDS", ""), "credentials file: a line USER:PASSWORD, or a NATS .creds file (user JWT and NKey seed) ($GUST_NATS_CREDS)")
		ca := fs.String("nats-ca", envOr("GUST_NATS_CA", ""), "PEM CA of the NATS server's TLS certificate ($GUST_NATS_CA)")
		request := fs.Bool("request", false, "wait for a reply and print it")
		timeout := fs.Duration("timeout", 30*time.Second, "how long --request waits")
		headers := kvFlag{}
		fs.Var(headers, "header", "message header K=V (repeatable)")
		return func(ctx context.Context, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("want SUBJECT and optionally DATA")
			}
			var data []byte
			if len(args) == 2 {
				data = []byte(args[1])
			} else if st, err := os.Stdin.Stat(); err == nil && st.Mode()&os.ModeCharDevice == 0 {
				var err error
				if data, err = io.ReadAll(os.Stdin); err != nil {
					return err
				}
			}
			cfg, err := publisherConfig(*nats, *creds, *ca)
			if err != nil {
				return err
			}
			bus, err := natsbus.ConnectWith(cfg, zap.NewNop())
			if err != nil {
				return err
			}
			defer bus.NC.Close()
			h := map[string][]string{}
			for k, v := range headers {
				h[k] = []string{v}
			}
			if !*request {
				if err := bus.Publish(args[0], data, h); err != nil {
					return err
				}
				if err := bus.NC.Flush(); err != nil {
					return err
				}
				// A refused publish is reported by the server
				// asynchronously, before the answer to Flush's ping.
				return bus.NC.LastError()
			}
			ctx, cancel := context.WithTimeout(ctx, *timeout)
			defer cancel()
			reply, err := bus.RequestRaw(ctx, args[0], data, h)
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(reply)
			return err
		}
	},
}

var deadlettersCommand = &Command{
	Name:  "deadletters",
	Usage: "[list | show CALL-ID | redrive CALL-ID | purge] [--function F]",
	Short: "list, show, redrive or purge async calls that ran out of attempts",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		function := fs.String("function", "", "only this function")
		return func(ctx context.Context, args []string) error {
			c := cf.client()
			verb := "list"
			if len(args) > 0 {
				verb = args[0]
			}
			q := url.Values{}
			if cf.namespace != "" {
				q.Set("namespace", cf.namespace)
			}
			if *function != "" {
				q.Set("function", *function)
			}
			switch {
			case verb == "list" && len(args) <= 1:
				dls, err := c.DeadLetters(ctx, q)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CALL ID\tFUNCTION\tATTEMPTS\tFAILED\tLAST ERROR")
				for _, d := range dls {
					fmt.Fprintf(tw, "%s\t%s.%s\t%d\t%s\t%s\n", d.Request.CallID, d.Request.Function, d.Request.Namespace,
						d.Attempts, d.Failed.Format(time.RFC3339), strings.ReplaceAll(d.LastError, "\n", " "))
				}
				return tw.Flush()
			case verb == "show" && len(args) == 2:
				d, err := c.DeadLetter(ctx, args[1])
				if err != nil {
					return err
				}
				return printJSON(d)
			case verb == "redrive" && len(args) == 2:
				if err := c.Redrive(ctx, args[1]); err != nil {
					return err
				}
				fmt.Printf("redriven %s\n", args[1])
				return nil
			case verb == "purge" && len(args) == 1:
				n, err := c.PurgeDeadLetters(ctx, q)
				if err != nil {
					return err
				}
				fmt.Printf("purged %d dead letters\n", n)
				return nil
			}
			return usagef("want list, show CALL-ID, redrive CALL-ID or purge")
		}
	},
}

// publisherConfig is how `gust publish` connects: credentials from the
// URL, else from credsFile (a NATS .creds file, or a line USER:PASSWORD),
// else user events with $GUST_EVENTS_PASSWORD or the password gust up
// keeps in the default data directory.
func publisherConfig(url, credsFile, ca string) (natsbus.ClientConfig, error) {
	c := natsbus.ClientConfig{URL: url, Name: "gust-cli", CAFile: ca}
	switch {
	case natsbus.URLUser(url) != "":
	case credsFile != "":
		b, err := os.ReadFile(credsFile)
		if err != nil {
			return c, fmt.Errorf("--creds: %w", err)
		}
		if strings.Contains(string(b), "-----BEGIN NATS USER JWT-----") {
			c.CredsFile = credsFile
			break
		}
		line, _, _ := strings.Cut(string(b), "\n")
		user, pw, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if !ok || user == "" || pw == "" {
			return c, fmt.Errorf("--creds %s: want a line USER:PASSWORD or a NATS .creds file", credsFile)
		}
		c.User, c.Password = user, pw
	case os.Getenv("GUST_EVENTS_PASSWORD") != "":
		c.User, c.Password = natsbus.UserEvents, os.Getenv("GUST_EVENTS_PASSWORD")
	default:
		// gust up on this machine: its events password, when this user
		// may read it; else no credentials, and the server's refusal
		// says so.
		if pw, err := readPasswordFile(filepath.Join(defaultDataDir(), eventsPasswordFile)); err == nil {
			c.User, c.Password = natsbus.UserEvents, pw
		}
	}
	return c, nil
}
