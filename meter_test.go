package gust

import (
	"encoding/json"
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
