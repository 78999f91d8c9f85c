package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
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
	Usage: "[--group-by function] [--from T] [--to T] [--function F] [--csv | --json]",
	Short: "show what calls cost, per namespace, function, hour, day or month",
	Long: `Prints the billing report of the gateway: requests, errors, cold starts,
billed duration, GB-seconds and costs per group, with totals, and the
capacity each function held (instance-seconds). Prices come from the
gateway's pricing (see README); the report states its formula.`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		var rf reportFlags
		rf.register(fs)
		groupBy := fs.String("group-by", "function", "namespace, function, hour, day or month")
		asCSV := fs.Bool("csv", false, "print CSV")
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, args []string) error {
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
