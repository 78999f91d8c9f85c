package gust_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// FuzzQuantity feeds one string to both quantity parsers of the deploy
// spec. A quantity that parses is positive, within its bound, does not
// depend on surrounding blanks, and formatting it back (as a plain number
// and with a unit) parses to the same value: what a client reads back from
// a deployed function is what it deployed.
func FuzzQuantity(f *testing.F) {
	for _, s := range []string{
		"128Mi", "1Gi", "512Ki", "2Ti", "500M", "1G", "1T", "64k", "64K",
		"128m", "1g", "134217728", " 256Mi ", "0.5Gi", "1.5", "0.5", "2",
		"500m", "0.001", "1e3", "1e-3m", "0x10", "0", "-1", "-128Mi", "",
		"Mi", "m", "NaN", "Inf", "+Inf", "1e400", "9223372036854775807",
		"9.3e18", "8Ti", "1000000", "1000001", "0.0000000001", "1e-10m",
		"1_000", "١٢٨Mi", "128Mi\n", "128 Mi",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if b, err := gust.ParseMemory(s); err == nil {
			if b <= 0 {
				t.Fatalf("ParseMemory(%q) = %d, want a positive number of bytes", s, b)
			}
			again, err := gust.ParseMemory(strconv.FormatInt(b, 10))
			if err != nil || again != b {
				t.Fatalf("ParseMemory(%q) = %d, but ParseMemory(%d) = %d, %v", s, b, b, again, err)
			}
			if b%(1<<20) == 0 {
				mi := fmt.Sprintf("%dMi", b>>20)
				if again, err := gust.ParseMemory(mi); err != nil || again != b {
					t.Fatalf("ParseMemory(%q) = %d, but ParseMemory(%q) = %d, %v", s, b, mi, again, err)
				}
			}
			if padded, err := gust.ParseMemory(" " + s + "\t"); err != nil || padded != b {
				t.Fatalf("ParseMemory(%q) = %d, but with blanks around it %d, %v", s, b, padded, err)
			}
		}
		if n, err := gust.ParseCPU(s); err == nil {
			if n <= 0 || n > 1e6*1e9 {
				t.Fatalf("ParseCPU(%q) = %d nano-CPUs, want from 1 to 1e15", s, n)
			}
			cores := strconv.FormatFloat(float64(n)/1e9, 'f', -1, 64)
			if again, err := gust.ParseCPU(cores); err != nil || again != n {
				t.Fatalf("ParseCPU(%q) = %d, but ParseCPU(%q) = %d, %v", s, n, cores, again, err)
			}
			if n%1e6 == 0 {
				milli := fmt.Sprintf("%dm", n/1e6)
				if again, err := gust.ParseCPU(milli); err != nil || again != n {
					t.Fatalf("ParseCPU(%q) = %d, but ParseCPU(%q) = %d, %v", s, n, milli, again, err)
				}
			}
			if padded, err := gust.ParseCPU(" " + s + "\n"); err != nil || padded != n {
				t.Fatalf("ParseCPU(%q) = %d, but with blanks around it %d, %v", s, n, padded, err)
			}
		}
	})
}

// labelKeys are the labels FuzzLabels sets, in the order of its arguments.
var labelKeys = []string{
	gust.LabelScaleMin, gust.LabelScaleMax, gust.LabelConcurrency,
	gust.LabelIdleTimeout, gust.LabelTimeout, gust.LabelRetryMinDelay,
	gust.LabelRetryMaxDelay, gust.LabelHealth, gust.LabelUser, gust.LabelRetryOn,
}

// FuzzLabels parses the scaling, timing, health, user and retry labels of a
// spec (present is a bit mask of which ones are set). A spec whose labels
// parse has a configuration within its bounds that says what the labels
// say; one that does not is refused with EINVALID naming one of the labels
// it carries, by ParseConfig; Validate refuses it too (it may refuse more:
// the operator's bounds).
func FuzzLabels(f *testing.F) {
	f.Add(uint16(0), "", "", "", "", "", "", "", "", "", "")
	f.Add(uint16(0x3ff), "1", "5", "10", "30s", "2m", "1s", "1m", "/healthz", "1000:1000", "5xx,429")
	f.Add(uint16(0x003), "5", "2", "", "", "", "", "", "", "", "")
	f.Add(uint16(0x003), " 0 ", "0", "", "", "", "", "", "", "", "")
	f.Add(uint16(0x004), "", "", "0", "", "", "", "", "", "", "")
	f.Add(uint16(0x018), "", "", "", "-1s", "0", "", "", "", "", "")
	f.Add(uint16(0x060), "", "", "", "", "", "2m", "1m", "", "", "")
	f.Add(uint16(0x080), "", "", "", "", "", "", "", "tcp", "", "")
	f.Add(uint16(0x080), "", "", "", "", "", "", "", "healthz", "", "")
	f.Add(uint16(0x100), "", "", "", "", "", "", "", "", "root", "")
	f.Add(uint16(0x100), "", "", "", "", "", "", "", "", "2147483648", "")
	f.Add(uint16(0x200), "", "", "", "", "", "", "", "", "", "none")
	f.Add(uint16(0x200), "", "", "", "", "", "", "", "", "", "5xx,oom")
	f.Add(uint16(0x007), "9223372036854775807", "9223372036854775807", "99999999999999999999", "", "", "", "", "", "", "")
	f.Add(uint16(0x018), "", "", "", "2562047h47m16.854775807s", "1e3h", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, present uint16, min, max, conc, idle, timeout, minDelay, maxDelay, health, user, retryOn string) {
		values := []string{min, max, conc, idle, timeout, minDelay, maxDelay, health, user, retryOn}
		labels := map[string]string{}
		for i, k := range labelKeys {
			if present&(1<<i) != 0 {
				labels[k] = values[i]
			}
		}
		spec := &gust.FunctionSpec{Service: "fn", Image: "example/fn:1", Labels: labels}
		c, err := gust.ParseConfig(spec)
		// Validate may refuse more (the operator's bounds), never less;
		// whatever it refuses a spec for names its labels.
		verr := spec.Validate()
		if verr == nil && err != nil {
			t.Fatalf("Validate() accepts what ParseConfig refuses: %v", err)
		}
		if vf := gust.ErrorField(verr); verr != nil && vf != "labels" && !strings.HasPrefix(vf, "labels.") {
			t.Fatalf("Validate() = %v: its field %q is not the labels", verr, vf)
		}
		if err != nil {
			field := gust.ErrorField(err)
			if gust.ErrorCode(err) != gust.EINVALID {
				t.Fatalf("ParseConfig(%v) = %v, want EINVALID", labels, err)
			}
			if _, ok := labels[strings.TrimPrefix(field, "labels.")]; !ok || !strings.HasPrefix(field, "labels.") {
				t.Fatalf("ParseConfig(%v) = %v: its field %q is not one of the labels set", labels, err, field)
			}
			return
		}
		if c.Min < 0 || c.Max < 1 || c.Min > c.Max || c.Concurrency < 1 {
			t.Fatalf("labels %v gave min %d, max %d, concurrency %d", labels, c.Min, c.Max, c.Concurrency)
		}
		if c.IdleTimeout <= 0 || c.Timeout <= 0 || c.Retry.MinDelay <= 0 || c.Retry.MinDelay > c.Retry.MaxDelay {
			t.Fatalf("labels %v gave idle %v, timeout %v, retry delays %v..%v", labels, c.IdleTimeout, c.Timeout, c.Retry.MinDelay, c.Retry.MaxDelay)
		}
		if !c.HealthTCP && !strings.HasPrefix(c.HealthPath, "/") {
			t.Fatalf("labels %v gave health path %q", labels, c.HealthPath)
		}
		if v, ok := labels[gust.LabelUser]; ok && (c.User != v || !gust.ValidUser(c.User)) {
			t.Fatalf("label %s=%q gave user %q", gust.LabelUser, v, c.User)
		}
		wantInt := func(key string, got int) {
			if v, ok := labels[key]; ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err != nil || n != got {
					t.Fatalf("label %s=%q gave %d", key, v, got)
				}
			}
		}
		wantInt(gust.LabelScaleMin, c.Min)
		wantInt(gust.LabelScaleMax, c.Max)
		wantInt(gust.LabelConcurrency, c.Concurrency)
		wantDur := func(key string, got time.Duration) {
			if v, ok := labels[key]; ok {
				if d, err := time.ParseDuration(strings.TrimSpace(v)); err != nil || d != got {
					t.Fatalf("label %s=%q gave %v", key, v, got)
				}
			}
		}
		wantDur(gust.LabelIdleTimeout, c.IdleTimeout)
		wantDur(gust.LabelTimeout, c.Timeout)
		wantDur(gust.LabelRetryMinDelay, c.Retry.MinDelay)
		wantDur(gust.LabelRetryMaxDelay, c.Retry.MaxDelay)
		// The registry's copy of the function reads the same configuration.
		fn := gust.Function{Spec: *spec}
		if got := fn.Config(); got.Min != c.Min || got.Max != c.Max || got.Concurrency != c.Concurrency || got.Timeout != c.Timeout {
			t.Fatalf("Function.Config() = %+v, ParseConfig = %+v", got, c)
		}
	})
}

// FuzzCallRecordDecodeJSON decodes any bytes as the billing ingest decodes
// a call record (CallRecord.DecodeJSON) and as encoding/json does: both
// fail, or both give the same record. Seeds: a record as AppendJSON makes
// it, and documents just off its form.
func FuzzCallRecordDecodeJSON(f *testing.F) {
	start := time.Date(2026, 11, 27, 1, 2, 3, 456789012, time.UTC)
	f.Add((&gust.CallRecord{CallID: "c1", CallerID: "mine-1", Namespace: "openfaas-fn", Function: "echo", Version: 3, Image: "echo:latest",
		Worker: "w1", Instance: "i1", Trigger: gust.TriggerHTTP, Start: start, End: start, DurationNs: 1, BilledNs: 2, MemoryMiB: 128,
		ColdStart: true, InitNs: 3, Status: 200, Outcome: gust.OutcomeOK, BytesIn: 10, BytesOut: 20}).AppendJSON(nil))
	f.Add([]byte(`{"callId":"a","status":01,"start":"2026-11-27T01:02:03+01:00"}`))
	f.Add([]byte(`{"callId":"a","CallId":"b","version":-0,"coldStart":false,"end":"2026-11-27T01:02:03.5Z"} `))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got, want gust.CallRecord
		gerr := got.DecodeJSON(b)
		werr := json.Unmarshal(b, &want)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: DecodeJSON error %v, encoding/json error %v", b, gerr, werr)
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\nDecodeJSON    %+v\nencoding/json %+v", b, got, want)
		}
	})
}
