package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

var logsCommand = &Command{
	Name:  "logs",
	Usage: "NAME [-f] [--since DURATION|TIME] [--tail N] [--instance ID] [--namespace NS] [--json]",
	Short: "print what a function's instances wrote (stdout and stderr), kept after they stop",
	Long: `Prints the lines a function's instances wrote, oldest first, one per line:
time, instance, the call the line was written during (when one call alone
ran then), and the text. Lines are kept after the instances stop, within
the log store's limits (docs/logs.md).

--since takes a duration back from now (10m, 2h) or an RFC 3339 time;
--tail N prints only the last N lines (at most 10000); -f (--follow) then
waits for new lines until interrupted. --json prints the gateway's NDJSON
(OpenFaaS's log messages) as is.`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		var follow bool
		fs.BoolVar(&follow, "f", false, "follow: wait for new lines until interrupted")
		fs.BoolVar(&follow, "follow", false, "same as -f")
		since := fs.String("since", "", "only lines written since: a duration back from now (10m) or an RFC 3339 time")
		tail := fs.Int("tail", 0, "only the last N lines (0: all)")
		instance := fs.String("instance", "", "only the lines of this instance")
		asJSON := fs.Bool("json", false, "print NDJSON, one log message per line")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want the function's NAME")
			}
			if *since != "" {
				if _, err := parseSinceFlag(*since, time.Now()); err != nil {
					return usagef("%v", err)
				}
			}
			if *tail < 0 {
				return usagef("--tail wants 0 or more lines")
			}
			q := gust.LogQuery{Name: args[0], Namespace: cf.namespace, Instance: *instance, Tail: *tail, Follow: follow}
			return printLogs(ctx, os.Stdout, *asJSON, func(fn func(gust.LogLine) error) error {
				return cf.client().Logs(ctx, q, *since, fn)
			})
		}
	},
}

// parseSinceFlag checks --since as the gateway will read it.
func parseSinceFlag(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q is neither a duration (10m) nor an RFC 3339 time", s)
}

// printLogs prints the lines read: as NDJSON, or one readable line each.
// An interrupt (ctx ended) while following is the normal end.
func printLogs(ctx context.Context, w io.Writer, asJSON bool, read func(func(gust.LogLine) error) error) error {
	enc := json.NewEncoder(w)
	err := read(func(l gust.LogLine) error {
		if asJSON {
			return enc.Encode(l)
		}
		_, err := fmt.Fprintln(w, formatLogLine(l))
		return err
	})
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// formatLogLine renders a line for the terminal: time, instance, call
// id (or "-"), text.
func formatLogLine(l gust.LogLine) string {
	call := l.CallID
	if call == "" {
		call = "-"
	}
	return l.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z") + " " + l.Instance + " " + call + " " + strings.TrimRight(l.Text, "\r")
}

// openLogs opens the log stream on bus, for a worker (to write) or a
// gateway (to read). A stream that cannot be had leaves logs off, loudly,
// rather than the role down: calls matter more than their output.
func openLogs(ctx context.Context, bus *natsbus.Bus, logger *zap.Logger) *natsbus.Logs {
	logs, err := natsbus.OpenLogs(ctx, bus, natsbus.LogLimits{}, logger)
	if err != nil {
		logger.Warn("function logs are off: the log stream is not available", zap.Error(err))
		return nil
	}
	return logs
}
