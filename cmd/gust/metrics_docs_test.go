package main

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/gustfaas/gust/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// gustMetricNames returns the names of Gust's own collectors, from their
// descriptions: a collector added to internal/metrics shows up here
// without being recorded first.
func gustMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	names := map[string]bool{}
	fqName := regexp.MustCompile(`fqName: "([a-z_:]+)"`)
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Field(i).Type() == reflect.TypeOf(m.Registry) {
			continue
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if mm := fqName.FindStringSubmatch(d.String()); mm != nil && strings.HasPrefix(mm[1], "gust_") {
				names[mm[1]] = true
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("no gust_ collectors found")
	}
	return names
}

// docs/metrics.md lists every metric, and the Grafana dashboard queries
// only metrics that exist (issue 12, point 4).
func TestMetricsDocs(t *testing.T) {
	names := gustMetricNames(t)
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for n := range names {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/metrics.md does not list %s", n)
		}
	}
	for _, n := range regexp.MustCompile("`(gust_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		if !names[n[1]] {
			t.Errorf("docs/metrics.md lists %s, which no role exports", n[1])
		}
	}

	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	used := map[string]bool{}
	ref := regexp.MustCompile(`gust_[a-z_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range ref.FindAllString(tg.Expr, -1) {
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if s, ok := strings.CutSuffix(n, suf); ok && names[s] {
						base = s
					}
				}
				if !names[base] {
					t.Errorf("panel %q queries %s, which no role exports", p.Title, n)
				}
				used[base] = true
			}
		}
	}
	for _, want := range []string{"gust_invocations_total", "gust_invocation_duration_seconds", "gust_cold_starts_total",
		"gust_instance_starts_total", "gust_async_enqueued_total", "gust_meter_records_stored_total"} {
		if !used[want] {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
}
