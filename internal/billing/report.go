// Package billing turns usage into money: prices from configuration
// (Pricing), and priced reports (Report) as JSON, CSV or a table, with
// exact decimal arithmetic. It is pure Go, so that the gateway, which
// prices reports, links no database: the stores that sum usage (the
// SQLite one is internal/sqlite) live apart behind gust.BillingStore.
package billing

import (
	"encoding/csv"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gustfaas/gust"
	"github.com/shopspring/decimal"
)

// DefaultLimit is the page size of a calls listing when the filter sets
// none: the gateway's default, and the stores' when given no limit.
const DefaultLimit = 100

// TotalGroup is the group name of a report's total row.
const TotalGroup = "TOTAL"

// Display precision: money in micro-units, GB-seconds to 6 decimals,
// seconds to the nanosecond.
const (
	moneyPlaces     = 6
	gbSecondsPlaces = 6
	secondsPlaces   = 9
)

// Exact unit conversions (no division, which would round).
var (
	perMillion   = decimal.New(1, -6)        // 1 / 1e6
	nsToSeconds  = decimal.New(1, -9)        // 1 / 1e9
	mibMicrosToG = decimal.New(9765625, -16) // 1 / (1024 × 1e6) = 5^10 / 10^16
	mibNsToG     = decimal.New(9765625, -19) // 1 / (1024 × 1e9)
)

// Report is the priced usage over a time range.
type Report struct {
	From     *time.Time `json:"from,omitempty"`
	To       *time.Time `json:"to,omitempty"`
	GroupBy  string     `json:"groupBy"`
	Currency string     `json:"currency"`
	// Formula states how the costs were computed.
	Formula string `json:"formula"`
	// Prices holds the default prices under DefaultPriceKey and the
	// override of each namespace that appears in the report.
	Prices map[string]Prices `json:"prices"`
	Groups []ReportRow       `json:"groups"`
	Total  ReportRow         `json:"total"`
	// Instances is the held capacity: instance-seconds and GB-seconds
	// held per function and memory size, the part of them spent paused,
	// and what the held GB-seconds would cost at the namespace's
	// perGBSecond. It is shown, not added to the totals.
	Instances []InstanceRow `json:"instances"`
	// AggregateOnly, when set, is the part of the report's range whose
	// raw call records were deleted by retention: its sums come from
	// hourly rollups, and a partial hour at its edge counts whole.
	AggregateOnly *Period `json:"aggregateOnly,omitempty"`
}

// Period is a range of time; a nil bound is open.
type Period struct {
	From *time.Time `json:"from,omitempty"`
	To   *time.Time `json:"to"`
	Note string     `json:"note"`
}

// ReportRow is the usage and cost of one group (or the total). Money is
// rounded half-up to micro-units from the exact value.
type ReportRow struct {
	Group           string          `json:"group"`
	Requests        int64           `json:"requests"`
	Errors          int64           `json:"errors"`
	ColdStarts      int64           `json:"coldStarts"`
	DurationSeconds decimal.Decimal `json:"durationSeconds"`
	BilledSeconds   decimal.Decimal `json:"billedSeconds"`
	GBSeconds       decimal.Decimal `json:"gbSeconds"`
	RequestCost     decimal.Decimal `json:"requestCost"`
	ComputeCost     decimal.Decimal `json:"computeCost"`
	TotalCost       decimal.Decimal `json:"totalCost"`
}

// InstanceRow is the capacity one function held at one memory size.
// InstanceSeconds, GBSeconds and Cost are the whole time held, from ready
// to stopped, paused or not (as before there was a paused tier, so that
// a client that reads only them reads what it always did).
type InstanceRow struct {
	Namespace       string          `json:"namespace"`
	Function        string          `json:"function"`
	MemoryMiB       int64           `json:"memoryMiB"`
	Instances       int64           `json:"instances"`
	InstanceSeconds decimal.Decimal `json:"instanceSeconds"`
	GBSeconds       decimal.Decimal `json:"gbSeconds"`
	// PausedSeconds and PausedGBSeconds are the part of InstanceSeconds
	// and GBSeconds that the instances spent paused: a paused instance
	// holds its memory but uses no CPU, so a price for held capacity may
	// want to tell the two apart.
	PausedSeconds   decimal.Decimal `json:"pausedSeconds"`
	PausedGBSeconds decimal.Decimal `json:"pausedGBSeconds"`
	Cost            decimal.Decimal `json:"cost"`
}

// rowSum accumulates exact values.
type rowSum struct {
	requests, errors, coldStarts int64
	durationNs, billedNs         decimal.Decimal
	gbSeconds                    decimal.Decimal
	requestCost, computeCost     decimal.Decimal
}

func (s *rowSum) add(o rowSum) {
	s.requests += o.requests
	s.errors += o.errors
	s.coldStarts += o.coldStarts
	s.durationNs = s.durationNs.Add(o.durationNs)
	s.billedNs = s.billedNs.Add(o.billedNs)
	s.gbSeconds = s.gbSeconds.Add(o.gbSeconds)
	s.requestCost = s.requestCost.Add(o.requestCost)
	s.computeCost = s.computeCost.Add(o.computeCost)
}

// row rounds the exact sums for display.
func (s rowSum) row(group string) ReportRow {
	return ReportRow{
		Group:           group,
		Requests:        s.requests,
		Errors:          s.errors,
		ColdStarts:      s.coldStarts,
		DurationSeconds: s.durationNs.Mul(nsToSeconds),
		BilledSeconds:   s.billedNs.Mul(nsToSeconds),
		GBSeconds:       s.gbSeconds.Round(gbSecondsPlaces),
		RequestCost:     s.requestCost.Round(moneyPlaces),
		ComputeCost:     s.computeCost.Round(moneyPlaces),
		TotalCost:       s.requestCost.Add(s.computeCost).Round(moneyPlaces),
	}
}

// Report prices usage rows (from gust.BillingStore.Usage) with each row's
// namespace prices. All arithmetic is exact; each displayed money value
// is rounded half-up to 6 decimals at the end, so a row's totalCost is the
// rounded exact sum and may differ from requestCost + computeCost by one
// micro-unit. from and to only label the report.
func (p Pricing) Report(rows []gust.UsageRow, inst []gust.InstanceUsageRow, groupBy string, from, to *time.Time) Report {
	r := Report{
		From:      utcPtr(from),
		To:        utcPtr(to),
		GroupBy:   groupBy,
		Currency:  p.Currency,
		Formula:   p.formula(),
		Prices:    map[string]Prices{DefaultPriceKey: p.Default},
		Groups:    []ReportRow{},
		Instances: []InstanceRow{},
	}
	usePrices := func(ns string) Prices {
		if o, ok := p.Namespaces[ns]; ok {
			r.Prices[ns] = o
			return o
		}
		return p.Default
	}

	groups := map[string]*rowSum{}
	var order []string
	var total rowSum
	for _, u := range rows {
		ps := usePrices(u.Namespace)
		gbs := decimal.NewFromInt(u.MiBMicros).Mul(mibMicrosToG)
		s := rowSum{
			requests:    u.Requests,
			errors:      u.Errors,
			coldStarts:  u.ColdStarts,
			durationNs:  decimal.NewFromInt(u.DurationNs),
			billedNs:    decimal.NewFromInt(u.BilledNs),
			gbSeconds:   gbs,
			requestCost: decimal.NewFromInt(u.Requests).Mul(ps.PerMillionRequests).Mul(perMillion),
			computeCost: gbs.Mul(ps.PerGBSecond),
		}
		g, ok := groups[u.Group]
		if !ok {
			g = &rowSum{}
			groups[u.Group] = g
			order = append(order, u.Group)
		}
		g.add(s)
		total.add(s)
	}
	sort.Strings(order)
	for _, name := range order {
		r.Groups = append(r.Groups, groups[name].row(name))
	}
	r.Total = total.row(TotalGroup)

	for _, u := range inst {
		ps := usePrices(u.Namespace)
		mem := decimal.NewFromInt(u.MemoryMiB)
		gbs := mem.Mul(decimal.NewFromInt(u.HeldNs)).Mul(mibNsToG)
		r.Instances = append(r.Instances, InstanceRow{
			Namespace:       u.Namespace,
			Function:        u.Function,
			MemoryMiB:       u.MemoryMiB,
			Instances:       u.Instances,
			InstanceSeconds: decimal.NewFromInt(u.HeldNs).Mul(nsToSeconds),
			GBSeconds:       gbs.Round(gbSecondsPlaces),
			PausedSeconds:   decimal.NewFromInt(u.PausedNs).Mul(nsToSeconds),
			PausedGBSeconds: mem.Mul(decimal.NewFromInt(u.PausedNs)).Mul(mibNsToG).Round(gbSecondsPlaces),
			Cost:            gbs.Mul(ps.PerGBSecond).Round(moneyPlaces),
		})
	}
	sort.SliceStable(r.Instances, func(i, j int) bool {
		a, b := r.Instances[i], r.Instances[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Function != b.Function {
			return a.Function < b.Function
		}
		return a.MemoryMiB < b.MemoryMiB
	})
	return r
}

func (p Pricing) formula() string {
	return "cost = requests × perMillionRequests / 1e6 + GB-seconds × perGBSecond, at the prices of each call's namespace; " +
		"GB-seconds = Σ memory MiB / 1024 × billed seconds; " +
		"billed duration = duration rounded up to " + p.Granularity.String() + "; " +
		"money rounded half-up to 6 decimals (micro-units) per row; totals are sums of the exact values, then rounded; " +
		"held capacity (instances, not in the totals): GB-seconds = Σ memory MiB / 1024 × seconds from ready to stopped, " +
		"cost = GB-seconds × perGBSecond; pausedSeconds and pausedGBSeconds are the part of it spent paused, " +
		"which holds memory and no CPU"
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// reportColumns are the CSV header and the order of reportCells.
var reportColumns = []string{
	"group", "requests", "errors", "coldStarts", "durationSeconds", "billedSeconds",
	"gbSeconds", "requestCost", "computeCost", "totalCost",
}

// reportCells formats a row with fixed decimals.
func reportCells(row ReportRow) []string {
	return []string{
		row.Group,
		strconv.FormatInt(row.Requests, 10),
		strconv.FormatInt(row.Errors, 10),
		strconv.FormatInt(row.ColdStarts, 10),
		row.DurationSeconds.StringFixed(secondsPlaces),
		row.BilledSeconds.StringFixed(secondsPlaces),
		row.GBSeconds.StringFixed(gbSecondsPlaces),
		row.RequestCost.StringFixed(moneyPlaces),
		row.ComputeCost.StringFixed(moneyPlaces),
		row.TotalCost.StringFixed(moneyPlaces),
	}
}

// WriteCSV writes the report's groups as CSV: a header line, one line per
// group and a TOTAL line. Money is in r.Currency, with 6 decimals.
func WriteCSV(w io.Writer, r Report) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(reportColumns); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	for _, row := range r.Groups {
		if err := cw.Write(reportCells(row)); err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
	}
	if err := cw.Write(reportCells(r.Total)); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

// WriteTable writes the report as an aligned text table for terminals:
// the groups, the totals, the held capacity if any, then the prices and
// the formula as footnotes.
func WriteTable(w io.Writer, r Report) error {
	ew := &errWriter{w: w}
	cur := r.Currency
	by := r.GroupBy
	if by == "" {
		by = "group"
	}
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tREQUESTS\tERRORS\tCOLD STARTS\tDURATION (s)\tBILLED (s)\tGB-s\tREQUEST COST (%s)\tCOMPUTE COST (%s)\tTOTAL COST (%s)\n",
		strings.ToUpper(by), cur, cur, cur)
	for _, row := range r.Groups {
		writeTabRow(tw, reportCells(row))
	}
	writeTabRow(tw, reportCells(r.Total))
	_ = tw.Flush()

	if len(r.Instances) > 0 {
		fmt.Fprintf(ew, "\nHeld capacity (not in the totals above; paused: part of held, memory and no CPU):\n")
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "NAMESPACE\tFUNCTION\tMEMORY (MiB)\tINSTANCES\tHELD (s)\tPAUSED (s)\tGB-s\tPAUSED GB-s\tCOST (%s)\n", cur)
		for _, in := range r.Instances {
			writeTabRow(tw, []string{
				in.Namespace, in.Function,
				strconv.FormatInt(in.MemoryMiB, 10),
				strconv.FormatInt(in.Instances, 10),
				in.InstanceSeconds.StringFixed(secondsPlaces),
				in.PausedSeconds.StringFixed(secondsPlaces),
				in.GBSeconds.StringFixed(gbSecondsPlaces),
				in.PausedGBSeconds.StringFixed(gbSecondsPlaces),
				in.Cost.StringFixed(moneyPlaces),
			})
		}
		_ = tw.Flush()
	}

	keys := make([]string, 0, len(r.Prices))
	for k := range r.Prices {
		if k != DefaultPriceKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if _, ok := r.Prices[DefaultPriceKey]; ok {
		keys = append([]string{DefaultPriceKey}, keys...)
	}
	fmt.Fprintf(ew, "\nPrices (%s):\n", cur)
	for _, k := range keys {
		ps := r.Prices[k]
		fmt.Fprintf(ew, "  %s: %s per million requests, %s per GB-second\n", k, ps.PerMillionRequests, ps.PerGBSecond)
	}
	fmt.Fprintf(ew, "Formula: %s\n", r.Formula)
	if a := r.AggregateOnly; a != nil {
		fmt.Fprintf(ew, "Aggregate only up to %s: %s\n", a.To.Format(time.RFC3339), a.Note)
	}
	if ew.err != nil {
		return fmt.Errorf("write table: %w", ew.err)
	}
	return nil
}

// errWriter keeps the first write error and drops later writes.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(b)
	e.err = err
	return n, err
}

func writeTabRow(w io.Writer, cells []string) {
	_, _ = io.WriteString(w, strings.Join(cells, "\t")+"\n")
}
