package billing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/shopspring/decimal"
)

func d(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// assertDec fails unless got equals want exactly (as numbers).
func assertDec(t *testing.T, name string, got decimal.Decimal, want string) {
	t.Helper()
	if !got.Equal(d(want)) {
		t.Errorf("%s = %s, want %s", name, got, want)
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pricing.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultPricing(t *testing.T) {
	p := DefaultPricing()
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate = %v", err)
	}
	if p.Currency != "USD" || p.Granularity != time.Millisecond {
		t.Errorf("currency, granularity = %q, %s; want USD, 1ms", p.Currency, p.Granularity)
	}
	assertDec(t, "perMillionRequests", p.Default.PerMillionRequests, "0.20")
	assertDec(t, "perGBSecond", p.Default.PerGBSecond, "0.0000166667")
	assertDec(t, "PricesFor(any)", p.PricesFor("any").PerGBSecond, "0.0000166667")
}

func TestLoadPricing(t *testing.T) {
	t.Run("Overrides", func(t *testing.T) {
		path := writeFile(t, `{"currency":"EUR","perMillionRequests":"0.30","perGBSecond":0.00002,
			"granularity":"100us",
			"namespaces":{"team-a":{"perMillionRequests":"0.1","perGBSecond":"0.00001"},
			              "team-b":{"perGBSecond":"0.000005"}}}`)
		p, err := LoadPricing(path)
		if err != nil {
			t.Fatal(err)
		}
		if p.Currency != "EUR" || p.Granularity != 100*time.Microsecond {
			t.Errorf("currency, granularity = %q, %s; want EUR, 100µs", p.Currency, p.Granularity)
		}
		assertDec(t, "default perMillionRequests", p.Default.PerMillionRequests, "0.30")
		assertDec(t, "default perGBSecond", p.Default.PerGBSecond, "0.00002")
		assertDec(t, "team-a perMillionRequests", p.PricesFor("team-a").PerMillionRequests, "0.1")
		assertDec(t, "team-a perGBSecond", p.PricesFor("team-a").PerGBSecond, "0.00001")
		// team-b names only perGBSecond: the request price is the file's default.
		assertDec(t, "team-b perMillionRequests", p.PricesFor("team-b").PerMillionRequests, "0.30")
		assertDec(t, "team-b perGBSecond", p.PricesFor("team-b").PerGBSecond, "0.000005")
		assertDec(t, "other perGBSecond", p.PricesFor("other").PerGBSecond, "0.00002")
	})
	t.Run("MissingFieldsKeepDefaults", func(t *testing.T) {
		p, err := LoadPricing(writeFile(t, `{"currency":"EUR"}`))
		if err != nil {
			t.Fatal(err)
		}
		want := DefaultPricing()
		want.Currency = "EUR"
		if !reflect.DeepEqual(p, want) {
			t.Errorf("got %+v, want %+v", p, want)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		p := DefaultPricing()
		p.Namespaces = map[string]Prices{"team-a": {PerMillionRequests: d("0.1"), PerGBSecond: d("0.00001")}}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := LoadPricing(writeFile(t, string(b)))
		if err != nil {
			t.Fatal(err)
		}
		// Decimals compare by value: "0.20" reads back as 0.2.
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(b) {
			t.Errorf("round trip: got %s, want %s", again, b)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		tests := []struct {
			name, body, field string
		}{
			{"BadGranularity", `{"granularity":"soon"}`, "pricing.granularity"},
			{"SubMicroGranularity", `{"granularity":"1500ns"}`, "pricing.granularity"},
			{"NegativePrice", `{"namespaces":{"team-a":{"perGBSecond":"-1"}}}`, "pricing.namespaces.team-a.perGBSecond"},
			{"UnknownField", `{"perRequest":"1"}`, ""},
			{"NotJSON", `{`, ""},
			{"BadDecimal", `{"perGBSecond":"cheap"}`, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := LoadPricing(writeFile(t, tt.body))
				if err == nil {
					t.Fatal("got nil error")
				}
				if tt.field != "" && gust.ErrorField(err) != tt.field {
					t.Errorf("err = %v, want field %q", err, tt.field)
				}
			})
		}
		if _, err := LoadPricing(filepath.Join(t.TempDir(), "missing.json")); err == nil {
			t.Error("missing file: got nil error")
		}
	})
}

func TestPricing_Validate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(p *Pricing)
		field string
	}{
		{"Currency", func(p *Pricing) { p.Currency = "" }, "pricing.currency"},
		{"ZeroGranularity", func(p *Pricing) { p.Granularity = 0 }, "pricing.granularity"},
		{"NegativeGranularity", func(p *Pricing) { p.Granularity = -time.Millisecond }, "pricing.granularity"},
		{"FractionalMicros", func(p *Pricing) { p.Granularity = 1500 * time.Nanosecond }, "pricing.granularity"},
		{"NegativeRequests", func(p *Pricing) { p.Default.PerMillionRequests = d("-0.2") }, "pricing.perMillionRequests"},
		{"NegativeGBSecond", func(p *Pricing) { p.Default.PerGBSecond = d("-0.000001") }, "pricing.perGBSecond"},
		{"NamespaceNegative", func(p *Pricing) {
			p.Namespaces = map[string]Prices{"team-a": {PerMillionRequests: d("1"), PerGBSecond: d("-1")}}
		}, "pricing.namespaces.team-a.perGBSecond"},
		{"NamespaceNegativeRequests", func(p *Pricing) {
			p.Namespaces = map[string]Prices{"team-a": {PerMillionRequests: d("-1")}}
		}, "pricing.namespaces.team-a.perMillionRequests"},
		{"NamespaceName", func(p *Pricing) { p.Namespaces = map[string]Prices{"Team A": {}} }, "pricing.namespaces.Team A"},
		{"NamespaceReserved", func(p *Pricing) { p.Namespaces = map[string]Prices{"default": {}} }, "pricing.namespaces.default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPricing()
			tt.edit(&p)
			err := p.Validate()
			if gust.ErrorCode(err) != gust.EINVALID || gust.ErrorField(err) != tt.field {
				t.Errorf("err = %v, want EINVALID on field %q", err, tt.field)
			}
		})
	}
	t.Run("ZeroPricesOK", func(t *testing.T) {
		p := DefaultPricing()
		p.Default = Prices{}
		p.Granularity = time.Microsecond
		if err := p.Validate(); err != nil {
			t.Errorf("Validate = %v", err)
		}
	})
}

// exampleUsage is three calls in one namespace: 128 MiB × 1 ms,
// 128 MiB × 1500 ms and 1024 MiB × 100 ms.
func exampleUsage() []gust.UsageRow {
	return []gust.UsageRow{{
		Group: "ns", Namespace: "ns", Requests: 3, Errors: 1, ColdStarts: 1,
		DurationNs: 1_601_000_000, BilledNs: 1_601_000_000,
		MiBMicros: 128*1_000 + 128*1_500_000 + 1024*100_000,
	}}
}

func TestReport_Exact(t *testing.T) {
	r := DefaultPricing().Report(exampleUsage(), nil, gust.GroupByNamespace, nil, nil)

	// By hand: GB-s = (128×0.001 + 128×1.5 + 1024×0.1) / 1024
	//              = (0.128 + 192 + 102.4) / 1024 = 294.528 / 1024 = 0.287625.
	gbs := d("0.287625")
	requestExact := d("3").Mul(d("0.20")).Div(d("1000000")) // 0.0000006
	computeExact := gbs.Mul(d("0.0000166667"))              // 0.0000047937595875
	totalExact := requestExact.Add(computeExact)            // 0.0000053937595875
	assertDec(t, "computeExact (self-check)", computeExact, "0.0000047937595875")

	if len(r.Groups) != 1 {
		t.Fatalf("groups = %+v, want one", r.Groups)
	}
	for _, row := range []ReportRow{r.Groups[0], r.Total} {
		assertDec(t, row.Group+" gbSeconds", row.GBSeconds, "0.287625")
		assertDec(t, row.Group+" durationSeconds", row.DurationSeconds, "1.601")
		assertDec(t, row.Group+" billedSeconds", row.BilledSeconds, "1.601")
		// Half-up to micro-units: 0.6 µ → 1 µ; 4.79 µ → 5 µ; 5.39 µ → 5 µ.
		assertDec(t, row.Group+" requestCost", row.RequestCost, "0.000001")
		assertDec(t, row.Group+" computeCost", row.ComputeCost, "0.000005")
		// The total is the rounded exact sum, not the sum of rounded parts.
		assertDec(t, row.Group+" totalCost", row.TotalCost, totalExact.Round(6).String())
		assertDec(t, row.Group+" totalCost", row.TotalCost, "0.000005")
		if row.Requests != 3 || row.Errors != 1 || row.ColdStarts != 1 {
			t.Errorf("%s counts = %d/%d/%d, want 3/1/1", row.Group, row.Requests, row.Errors, row.ColdStarts)
		}
	}
	if r.Total.Group != TotalGroup {
		t.Errorf("total group = %q", r.Total.Group)
	}

	t.Run("AtScale", func(t *testing.T) {
		// One million 1 GiB calls of 1 s each: 0.20 + 1e6 × 0.0000166667 = 16.8667.
		rows := []gust.UsageRow{{Group: "x", Namespace: "x", Requests: 1_000_000,
			DurationNs: 1_000_000 * 1e9, BilledNs: 1_000_000 * 1e9, MiBMicros: 1024 * 1_000_000 * 1_000_000}}
		r := DefaultPricing().Report(rows, nil, gust.GroupByNamespace, nil, nil)
		assertDec(t, "gbSeconds", r.Total.GBSeconds, "1000000")
		assertDec(t, "requestCost", r.Total.RequestCost, "0.2")
		assertDec(t, "computeCost", r.Total.ComputeCost, "16.6667")
		assertDec(t, "totalCost", r.Total.TotalCost, "16.8667")
	})
}

func TestReport_NamespaceOverride(t *testing.T) {
	p := DefaultPricing()
	p.Namespaces = map[string]Prices{
		"team-a":  {PerMillionRequests: d("0.1"), PerGBSecond: d("0.00001")},
		"team-zz": {PerMillionRequests: d("9"), PerGBSecond: d("9")}, // unused
	}
	gib := int64(1024 * 1_000_000) // MiB-µs of one GB-second
	rows := []gust.UsageRow{
		{Group: "2024-02-01", Namespace: "other", Requests: 2_000_000, MiBMicros: 10 * gib},
		{Group: "2024-02-01", Namespace: "team-a", Requests: 2_000_000, MiBMicros: 10 * gib},
		{Group: "2024-02-02", Namespace: "team-a", Requests: 3, MiBMicros: 3 * gib / 7},
	}
	r := p.Report(rows, nil, gust.GroupByDay, nil, nil)

	// Day 1: other at default prices: 2 × 0.20 + 10 × 0.0000166667 = 0.4 + 0.000166667;
	//        team-a at its prices:    2 × 0.1  + 10 × 0.00001      = 0.2 + 0.0001.
	day1Request := d("0.4").Add(d("0.2"))
	day1Compute := d("0.000166667").Add(d("0.0001"))
	// Day 2: team-a: 3 × 0.1 / 1e6 = 0.0000003; GB-s = (3 × 1024e6 / 7 truncated) / 1024e6.
	day2GBs := decimal.NewFromInt(3 * gib / 7).Div(decimal.NewFromInt(gib))
	day2Request := d("0.0000003")
	day2Compute := decimal.NewFromInt(3 * gib / 7).Mul(d("0.00001")).Div(decimal.NewFromInt(gib))

	if len(r.Groups) != 2 {
		t.Fatalf("groups = %+v, want 2", r.Groups)
	}
	g1, g2 := r.Groups[0], r.Groups[1]
	if g1.Group != "2024-02-01" || g2.Group != "2024-02-02" {
		t.Fatalf("group names = %q, %q", g1.Group, g2.Group)
	}
	assertDec(t, "day1 requestCost", g1.RequestCost, "0.6")
	assertDec(t, "day1 computeCost", g1.ComputeCost, "0.000267")
	assertDec(t, "day1 totalCost", g1.TotalCost, day1Request.Add(day1Compute).Round(6).String())
	assertDec(t, "day1 gbSeconds", g1.GBSeconds, "20")
	assertDec(t, "day2 gbSeconds", g2.GBSeconds, day2GBs.Round(6).String())
	assertDec(t, "day2 requestCost", g2.RequestCost, "0") // 0.3 µ rounds down
	assertDec(t, "day2 computeCost", g2.ComputeCost, day2Compute.Round(6).String())
	if r.Total.Requests != 4_000_003 || g1.Requests != 4_000_000 {
		t.Errorf("requests = %d (total), %d (day1)", r.Total.Requests, g1.Requests)
	}
	// The total is rounded from the exact sums.
	exactTotal := day1Request.Add(day1Compute).Add(day2Request).Add(day2Compute)
	assertDec(t, "total totalCost", r.Total.TotalCost, exactTotal.Round(6).String())
	assertDec(t, "total requestCost", r.Total.RequestCost, day1Request.Add(day2Request).Round(6).String())

	if _, ok := r.Prices["team-a"]; !ok {
		t.Error("prices lack the team-a override")
	}
	if _, ok := r.Prices["team-zz"]; ok {
		t.Error("prices list the unused team-zz override")
	}
	if len(r.Prices) != 2 || !r.Prices[DefaultPriceKey].PerGBSecond.Equal(d("0.0000166667")) {
		t.Errorf("prices = %+v, want default and team-a", r.Prices)
	}
}

func TestReport_TotalOfRoundedRows(t *testing.T) {
	// Two groups of 2 requests at 0.20/M: each 0.4 µ, shown as 0; the total
	// is the exact 0.8 µ, shown as 1 µ.
	rows := []gust.UsageRow{
		{Group: "a", Namespace: "a", Requests: 2},
		{Group: "b", Namespace: "b", Requests: 2},
	}
	r := DefaultPricing().Report(rows, nil, gust.GroupByNamespace, nil, nil)
	assertDec(t, "a", r.Groups[0].TotalCost, "0")
	assertDec(t, "b", r.Groups[1].TotalCost, "0")
	assertDec(t, "total", r.Total.TotalCost, "0.000001")
}

func TestReport_Instances(t *testing.T) {
	inst := []gust.InstanceUsageRow{
		{Namespace: "b", Function: "h", MemoryMiB: 512, Instances: 1, HeldNs: int64(2 * time.Hour)},
		{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 2, HeldNs: int64(690 * time.Second),
			PausedNs: int64(600*time.Second + time.Millisecond)},
	}
	r := DefaultPricing().Report(nil, inst, gust.GroupByFunction, nil, nil)
	if len(r.Instances) != 2 || r.Instances[0].Namespace != "a" {
		t.Fatalf("instances = %+v, want a/f first", r.Instances)
	}
	a := r.Instances[0]
	// 128 MiB × 690 s = 0.125 GiB × 690 s = 86.25 GB-s; × 0.0000166667 = 0.001437502875.
	assertDec(t, "instanceSeconds", a.InstanceSeconds, "690")
	assertDec(t, "gbSeconds", a.GBSeconds, "86.25")
	assertDec(t, "cost", a.Cost, "0.001438")
	// Paused: 600.001 s of the 690 held; 0.125 GiB × 600.001 s = 75.000125 GB-s.
	// The held figures and the cost include them.
	assertDec(t, "pausedSeconds", a.PausedSeconds, "600.001")
	assertDec(t, "pausedGBSeconds", a.PausedGBSeconds, "75.000125")
	if a.Instances != 2 || a.MemoryMiB != 128 {
		t.Errorf("row = %+v", a)
	}
	// 0.5 GiB × 7200 s = 3600 GB-s; × 0.0000166667 = 0.06000012.
	assertDec(t, "b cost", r.Instances[1].Cost, "0.060000")
	assertDec(t, "b pausedSeconds", r.Instances[1].PausedSeconds, "0")
	assertDec(t, "b pausedGBSeconds", r.Instances[1].PausedGBSeconds, "0")
	if r.Total.Requests != 0 || !r.Total.TotalCost.IsZero() {
		t.Errorf("held capacity leaked into the totals: %+v", r.Total)
	}
}

// TestReport_JSON checks the wire names and that the only count-like key
// is "requests", an integer equal to the number of calls.
func TestReport_JSON(t *testing.T) {
	from := time.Date(2024, 2, 1, 9, 0, 0, 0, time.FixedZone("X", 9*3600))
	r := DefaultPricing().Report(exampleUsage(), []gust.InstanceUsageRow{
		{Namespace: "ns", Function: "f", MemoryMiB: 128, Instances: 7, HeldNs: 1e9, PausedNs: 0.25e9},
	}, gust.GroupByNamespace, &from, nil)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"from", "groupBy", "currency", "formula", "prices", "groups", "total", "instances"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("report JSON lacks %q: %s", k, b)
		}
	}
	if _, ok := doc["to"]; ok {
		t.Errorf("report JSON has \"to\" for a nil To: %s", b)
	}
	if doc["from"] != "2024-02-01T00:00:00Z" {
		t.Errorf("from = %v, want UTC", doc["from"])
	}
	total := doc["total"].(map[string]any)
	for _, k := range []string{"group", "requests", "errors", "coldStarts", "durationSeconds", "billedSeconds",
		"gbSeconds", "requestCost", "computeCost", "totalCost"} {
		if _, ok := total[k]; !ok {
			t.Errorf("total lacks %q", k)
		}
	}
	inst := doc["instances"].([]any)[0].(map[string]any)
	for k, want := range map[string]string{"instanceSeconds": "1", "gbSeconds": "0.125",
		"pausedSeconds": "0.25", "pausedGBSeconds": "0.03125"} {
		if got := fmt.Sprint(inst[k]); got != want {
			t.Errorf("instances[0].%s = %#v, want %s", k, inst[k], want)
		}
	}
	if total["requests"] != float64(3) {
		t.Errorf("total requests = %#v, want the number 3", total["requests"])
	}
	// An external check takes the largest number under a count-like key
	// and expects the number of calls.
	countKey := regexp.MustCompile(`^(requests|invocations|calls|count)$`)
	largest := -1.0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if countKey.MatchString(k) {
					n, ok := c.(float64)
					if k != "requests" || !ok || n != float64(int64(n)) {
						t.Errorf("%s.%s = %#v: the only count-like key must be an integer \"requests\"", path, k, c)
					}
					largest = max(largest, n)
				}
				walk(path+"."+k, c)
			}
		case []any:
			for _, c := range v {
				walk(path+"[]", c)
			}
		}
	}
	walk("", doc)
	if largest != 3 {
		t.Errorf("largest count-like value = %v, want 3", largest)
	}
}

func TestWriteCSV(t *testing.T) {
	p := DefaultPricing()
	p.Namespaces = map[string]Prices{"team-a": {PerMillionRequests: d("0.1"), PerGBSecond: d("0.00001")}}
	rows := append(exampleUsage(), gust.UsageRow{
		Group: "team-a", Namespace: "team-a", Requests: 5, Errors: 0, ColdStarts: 2,
		DurationNs: 2_500_000, BilledNs: 3_000_000, MiBMicros: 256 * 3_000,
	})
	r := p.Report(rows, nil, gust.GroupByNamespace, nil, nil)
	var buf bytes.Buffer
	if err := WriteCSV(&buf, r); err != nil {
		t.Fatal(err)
	}
	// team-a: 256 MiB × 3 ms = 0.00075 GB-s; 5 × 0.1 / 1e6 = 0.0000005 → 0.000001;
	// 0.00075 × 0.00001 = 0.0000000075 → 0; total 0.0000005075 → 0.000001.
	// TOTAL: requests 0.0000006 + 0.0000005 = 0.0000011 → 0.000001;
	// compute 0.0000047937595875 + 0.0000000075 = 0.0000048012595875 → 0.000005;
	// total 0.0000059012595875 → 0.000006.
	want := `group,requests,errors,coldStarts,durationSeconds,billedSeconds,gbSeconds,requestCost,computeCost,totalCost
ns,3,1,1,1.601000000,1.601000000,0.287625,0.000001,0.000005,0.000005
team-a,5,0,2,0.002500000,0.003000000,0.000750,0.000001,0.000000,0.000001
TOTAL,8,1,3,1.603500000,1.604000000,0.288375,0.000001,0.000005,0.000006
`
	if got := buf.String(); got != want {
		t.Errorf("CSV:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteTable(t *testing.T) {
	r := DefaultPricing().Report(exampleUsage(), []gust.InstanceUsageRow{
		{Namespace: "ns", Function: "f", MemoryMiB: 128, Instances: 2, HeldNs: int64(690 * time.Second),
			PausedNs: int64(600 * time.Second)},
	}, gust.GroupByNamespace, nil, nil)
	var buf bytes.Buffer
	if err := WriteTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	totalLine := regexp.MustCompile(`(?m)^TOTAL +3 +1 +1 +1\.601000000 +1\.601000000 +0\.287625 +0\.000001 +0\.000005 +0\.000005$`)
	if !totalLine.MatchString(out) {
		t.Errorf("no aligned totals line in:\n%s", out)
	}
	instLine := regexp.MustCompile(`(?m)^ns +f +128 +2 +690\.000000000 +600\.000000000 +86\.250000 +75\.000000 +0\.001438$`)
	if !instLine.MatchString(out) {
		t.Errorf("no held capacity line with its paused part (held, paused, GB-s, paused GB-s, cost) in:\n%s", out)
	}
	for _, s := range []string{"NAMESPACE", "TOTAL COST (USD)", "PAUSED (s)", "PAUSED GB-s", "default: 0.2 per million requests",
		"Formula: cost = ", "paused, which holds memory and no CPU"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
	if err := WriteTable(failWriter{}, r); err == nil {
		t.Error("WriteTable to a failing writer: got nil error")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }
