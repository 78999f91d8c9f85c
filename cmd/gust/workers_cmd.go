package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"
)

var workersCommand = &Command{
	Name:  "workers",
	Usage: "[list | drain ID] [--json]",
	Short: "list the cluster's workers, or drain one (also: gust worker list | drain ID)",
	Long: `Without arguments, or with list, prints the workers the gateway knows:
their state (ready, draining, or silent: unheard for longer than the
gateway's worker timeout), the memory and CPU they offer, and the
instances they hold.

drain ID drains worker ID: it takes no new function, the scheduler places
its share of each function's warm minimum on other workers, and each of
its instances stops once its function has a ready instance elsewhere,
after the calls it runs. No call fails because of a drain. The worker then
holds nothing; stop it (and remove it) when 'gust workers' shows it with
no instance. Admin only.`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.registerAuth(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, args []string) error {
			switch {
			case len(args) == 0 || len(args) == 1 && args[0] == "list":
				ws, err := cf.client().Workers(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					return printJSON(ws)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTATE\tMEMORY\tCPUS\tINSTANCES\tADDRESS\tSTARTED")
				for _, w := range ws {
					n := 0
					for _, p := range w.Pools {
						n += p.Instances
					}
					mem, cpus := "-", "-"
					if w.MemoryBytes > 0 {
						mem = fmt.Sprintf("%dMi", w.MemoryBytes>>20)
					}
					if w.NanoCPUs > 0 {
						cpus = fmt.Sprintf("%.2f", float64(w.NanoCPUs)/1e9)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", w.ID, w.State, mem, cpus, n, w.Addr, w.Started.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			case len(args) == 2 && args[0] == "drain":
				ans, err := cf.client().DrainWorker(ctx, args[1])
				if err != nil {
					return err
				}
				if *asJSON {
					return printJSON(ans)
				}
				fmt.Printf("worker %s is draining (%d instances): they stop as their functions get ready elsewhere; 'gust workers' shows when it holds none\n", ans.ID, ans.Instances)
				return nil
			}
			return usagef("want list, or drain ID; got %v", args)
		}
	},
}

// workerSubcommand makes `gust worker list` and `gust worker drain ID`
// the client's verbs (workersCommand): `gust worker` alone, or with
// flags, runs a worker.
func workerSubcommand(args []string) []string {
	if len(args) > 1 && args[0] == "worker" && (args[1] == "list" || args[1] == "drain") {
		return append([]string{workersCommand.Name}, args[1:]...)
	}
	return args
}
