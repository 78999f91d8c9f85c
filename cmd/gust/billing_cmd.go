package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/gustfaas/gust/internal/billing"
)

// reportFlags are the filters shared by `gust billing` and `gust
// invocations`.
type reportFlags struct {
	function, from, to string
}

func (f *reportFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.function, "function", "", "only this function")
	fs.StringVar(&f.from, "from", "", "from this time (RFC 3339 or 2006-01-02, UTC), inclusive")
	fs.StringVar(&f.to, "to", "", "to this time, exclusive")
}

func (f *reportFlags) query(ns string) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"namespace": ns, "function": f.function, "from": f.from, "to": f.to} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

var billingCommand = &Command{
	Name:  "billing",
	Usage: "[--group-by function] [--from T] [--to T] [--function F] [--csv | --json]\n       gust billing export [--from T] [--to T] [--function F] [--format ndjson|csv] [--output FILE]",
	Short: "show what calls cost, per namespace, function, hour, day or month; export call records",
	Long: `Prints the billing report of the gateway: requests, errors, cold starts,
billed duration, GB-seconds and costs per group, with totals, and the
capacity each function held (instance-seconds and GB-seconds, and the part
of them spent paused: memory held, no CPU). Prices come from the
gateway's pricing (see README); the report states its formula.

gust billing export writes the raw call records of the range (newest
first) as NDJSON (one record per line, the fields of GET
/system/invocations) or CSV, for archiving before --billing-retention
deletes them. It pages through /system/invocations, 1000 records a page.`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		var rf reportFlags
		rf.register(fs)
		groupBy := fs.String("group-by", "function", "namespace, function, hour, day or month")
		asCSV := fs.Bool("csv", false, "print CSV")
		asJSON := fs.Bool("json", false, "print JSON")
		format := fs.String("format", "ndjson", "export: ndjson or csv")
		output := fs.String("output", "", "export: write to this file (default: standard output)")
		return func(ctx context.Context, args []string) error {
			if len(args) == 1 && args[0] == "export" {
				return exportCalls(ctx, cf, rf, *format, *output)
			}
			if len(args) > 0 {
				return usagef("unexpected arguments: %v", args)
			}
			q := rf.query(cf.namespace)
			q.Set("group_by", *groupBy)
			if *asCSV {
				q.Set("format", "csv")
			}
			body, err := cf.client().Billing(ctx, q)
			if err != nil {
				return err
			}
			if *asCSV || *asJSON {
				_, err := os.Stdout.Write(body)
				return err
			}
			var rep billing.Report
			if err := json.Unmarshal(body, &rep); err != nil {
				return fmt.Errorf("decode report: %w", err)
			}
			return billing.WriteTable(os.Stdout, rep)
		}
	},
}

var invocationsCommand = &Command{
	Name:  "invocations",
	Usage: "[CALL-ID] [--function F] [--status ok|error|timeout|crashed|rejected] [--limit N] [--json]",
	Short: "list call records, newest first, or show one",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		var rf reportFlags
		rf.register(fs)
		status := fs.String("status", "", "only calls with this outcome")
		limit := fs.Int("limit", 20, "records per page (at most 1000)")
		cursor := fs.String("cursor", "", "continue after a previous page")
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, args []string) error {
			c := cf.client()
			if len(args) == 1 {
				rec, err := c.Invocation(ctx, args[0])
				if err != nil {
					return err
				}
				return printJSON(rec)
			}
			if len(args) > 1 {
				return usagef("want at most one CALL-ID")
			}
			q := rf.query(cf.namespace)
			if *status != "" {
				q.Set("status", *status)
			}
			q.Set("limit", fmt.Sprint(*limit))
			if *cursor != "" {
				q.Set("cursor", *cursor)
			}
			recs, next, err := c.Invocations(ctx, q)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(map[string]any{"items": recs, "nextCursor": next})
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CALL ID\tFUNCTION\tSTART\tDURATION\tBILLED\tSTATUS\tOUTCOME\tCOLD")
			for _, r := range recs {
				cold := ""
				if r.ColdStart {
					cold = "cold"
				}
				fmt.Fprintf(tw, "%s\t%s.%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.CallID, r.Function, r.Namespace,
					r.Start.Format(time.RFC3339Nano), time.Duration(r.DurationNs), time.Duration(r.BilledNs), r.Status, r.Outcome, cold)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(os.Stderr, "more: gust invocations --cursor %s\n", next)
			}
			return nil
		}
	},
}

// exportCalls writes every call record that rf selects to output (or
// standard output) in format, a page of 1000 at a time, and says on
// standard error how many it wrote.
func exportCalls(ctx context.Context, cf clientFlags, rf reportFlags, format, output string) error {
	if format != "ndjson" && format != "csv" {
		return usagef("--format %q: want ndjson or csv", format)
	}
	var w io.Writer = os.Stdout
	if output != "" {
		f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		w = f
	}
	bw := bufio.NewWriter(w)
	cw := csv.NewWriter(bw)
	if format == "csv" {
		if err := cw.Write(billing.CallColumns); err != nil {
			return err
		}
	}
	c := cf.client()
	q := rf.query(cf.namespace)
	q.Set("limit", "1000")
	n := 0
	var line []byte
	for {
		recs, next, err := c.Invocations(ctx, q)
		if err != nil {
			return fmt.Errorf("after %d records: %w", n, err)
		}
		for i := range recs {
			if format == "csv" {
				err = cw.Write(billing.CallCells(&recs[i]))
			} else {
				line = append(recs[i].AppendJSON(line[:0]), '\n')
				_, err = bw.Write(line)
			}
			if err != nil {
				return err
			}
		}
		n += len(recs)
		if next == "" {
			break
		}
		q.Set("cursor", next)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "exported %d call records\n", n)
	return nil
}
