package gust

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestCallRecordAppendJSON: the hand-written encoder makes a document that
// decodes to the same record, special characters included.
func TestCallRecordAppendJSON(t *testing.T) {
	start := time.Date(2026, 11, 27, 1, 2, 3, 456789012, time.UTC)
	recs := []CallRecord{
		{CallID: "c1", CallerID: "mine-1", Namespace: "openfaas-fn", Function: "echo", Version: 3, Image: "echo:latest", Worker: "w1",
			Instance: "i1", Trigger: TriggerHTTP, Start: start, End: start.Add(1500 * time.Microsecond),
			DurationNs: 1500000, BilledNs: 2000000, MemoryMiB: 128, ColdStart: true, InitNs: 180000000,
			Status: 200, Outcome: OutcomeOK, BytesIn: 10, BytesOut: 20},
		{CallID: "weird \"id\"\n\x01\\ \u2028<>&é", Trigger: TriggerHTTP, Start: start, End: start, Status: 503, Outcome: OutcomeRejected},
	}
	for _, want := range recs {
		b := want.AppendJSON(nil)
		var got CallRecord
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if got != want {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
		}
	}
}

func TestCallRecordAppendJSONAllocs(t *testing.T) {
	r := CallRecord{CallID: "c1", Namespace: "ns", Function: "f", Start: time.Now(), End: time.Now()}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = r.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON allocates %.0f times per record, want 0", n)
	}
}

func TestBilledDuration(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct{ d, g, want time.Duration }{
		{0, ms, 0}, {1, ms, ms}, {ms, ms, ms}, {ms + 1, ms, 2 * ms}, {1500 * time.Microsecond, 100 * ms, 100 * ms},
		{-5, ms, 0}, {7, 0, 7},
	} {
		if got := BilledDuration(tt.d, tt.g); got != tt.want {
			t.Errorf("BilledDuration(%v, %v) = %v, want %v", tt.d, tt.g, got, tt.want)
		}
	}
}

// decodeBoth decodes b with DecodeJSON and with encoding/json and fails
// unless both agree: the same error-ness and, without an error, the same
// record.
func decodeBoth(t *testing.T, b []byte) {
	t.Helper()
	var got, want CallRecord
	gerr := got.DecodeJSON(b)
	werr := json.Unmarshal(b, &want)
	if (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: DecodeJSON error %v, encoding/json error %v", b, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\nDecodeJSON   %+v\nencoding/json %+v", b, got, want)
	}
}

// TestCallRecordDecodeJSON: the decoder of the billing ingest reads what
// AppendJSON makes, and anything else as encoding/json does.
func TestCallRecordDecodeJSON(t *testing.T) {
	start := time.Date(2026, 11, 27, 1, 2, 3, 456789012, time.UTC)
	full := CallRecord{CallID: "c1", CallerID: "mine-1", Namespace: "openfaas-fn", Function: "echo", Version: 3, Image: "echo:latest",
		Worker: "w1", Instance: "i1", Trigger: TriggerHTTP, Start: start, End: start.Add(1500 * time.Microsecond),
		DurationNs: 1500000, BilledNs: 2000000, MemoryMiB: 128, ColdStart: true, InitNs: 180000000,
		Status: 200, Outcome: OutcomeOK, BytesIn: 10, BytesOut: -20}
	for _, r := range []CallRecord{full, {CallID: "weird \"id\"\n\x01\\ é\xff", Start: start, End: start, Status: 503, Outcome: OutcomeRejected}, {}} {
		b := r.AppendJSON(nil)
		decodeBoth(t, b)
		var fast CallRecord
		if !fast.decodeFast(b) && r.CallID == "c1" {
			t.Errorf("AppendJSON's document %s takes the slow path", b)
		}
	}
	for _, doc := range []string{
		`{}`, `{"callId":"a","callId":"b"}`, `{"CALLID":"a"}`, `{"callId":null}`, `{"status":1e2}`, `{"status":01}`,
		`{"status":-0}`, `{"status":1.0}`, `{"version":-1}`, `{"version":18446744073709551615}`, `{"version":18446744073709551616}`,
		`{"durationNs":9223372036854775808}`, `{"start":"2026-11-27T01:02:03+01:00"}`, `{"start":"2026-11-27 01:02:03Z"}`,
		`{"start":"2026-11-27T01:02:03.Z"}`, `{"start":null}`, `{"coldStart":true}`, `{"coldStart":truex}`, `{"coldStart":1}`,
		`{"callId":"a",}`, `{"callId":"a"} `, `{"callId":"a"}x`, `{ "callId":"a"}`, `{"unknown":[1,2]}`, `[]`, ``, `{`,
		`{"callId":"a\u0041"}`, `{"callId":"é"}`, `{"status":200`, `{"callId"`, `{"callId":`, `{"trigger":"http","outcome":"ok"}`,
	} {
		decodeBoth(t, []byte(doc))
	}
}

func TestCallRecordDecodeJSONAllocs(t *testing.T) {
	r := CallRecord{CallID: "0123456789abcdef", Namespace: "openfaas-fn", Function: "hello", Version: 1, Image: "hello:latest",
		Worker: "worker-1", Instance: "abcdef012345", Trigger: TriggerHTTP, Start: time.Now(), End: time.Now(), Status: 200, Outcome: OutcomeOK}
	b := r.AppendJSON(nil)
	var got CallRecord
	// One per string field that is not a shared constant: call id,
	// namespace, function, image, worker, instance.
	if n := testing.AllocsPerRun(100, func() { _ = got.DecodeJSON(b) }); n > 6 {
		t.Errorf("DecodeJSON allocates %.0f times per record, want at most 6", n)
	}
}

func BenchmarkCallRecordDecode(b *testing.B) {
	now := time.Now()
	r := CallRecord{CallID: "0123456789abcdef0123456789abcdef", Namespace: "openfaas-fn", Function: "hello",
		Version: 1, Image: "hello:latest", Worker: "worker-1", Instance: "abcdef012345", Trigger: TriggerHTTP,
		Start: now, End: now.Add(time.Millisecond), DurationNs: 1e6, BilledNs: 1e6, MemoryMiB: 128, Status: 200,
		Outcome: OutcomeOK, BytesIn: 10, BytesOut: 20}
	doc := r.AppendJSON(nil)
	b.Run("DecodeJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got CallRecord
			if err := got.DecodeJSON(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got CallRecord
			if err := json.Unmarshal(doc, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
}
