package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
)

// The benchmarks of this package each record their headline figures here,
// with the baseline measured in the same run and the target of issue 11;
// TestMain prints them as one table after the last benchmark, so that
// `make bench` ends with every figure side by side. A benchmark that did
// not run adds no row.

// benchRow is one figure: what Gust measured, the baseline of the same
// run, their ratio as the target reads it, the target, and whether it was
// met.
type benchRow struct {
	Bench, Figure  string
	Gust, Baseline string
	Ratio, Target  string
	Met            bool
	NoTarget       bool
}

var benchTable struct {
	mu   sync.Mutex
	rows []benchRow
}

// benchRecord adds a row to the table.
func benchRecord(r benchRow) {
	benchTable.mu.Lock()
	benchTable.rows = append(benchTable.rows, r)
	benchTable.mu.Unlock()
}

// printBenchTable writes the recorded rows, if any, as one table.
func printBenchTable(w io.Writer) {
	benchTable.mu.Lock()
	defer benchTable.mu.Unlock()
	if len(benchTable.rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nGust benchmarks (baselines measured in the same run):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\tfigure\tgust\tbaseline\tratio\ttarget\tmet")
	for _, r := range benchTable.rows {
		met := "no"
		switch {
		case r.NoTarget:
			met = "-"
		case r.Met:
			met = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strings.TrimPrefix(r.Bench, "Benchmark"), r.Figure, r.Gust, r.Baseline, r.Ratio, r.Target, met)
	}
	tw.Flush()
}

// printBenchTableAtExit is called by TestMain after the run.
func printBenchTableAtExit() { printBenchTable(os.Stdout) }
