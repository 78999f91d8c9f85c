package natsbus

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/spool"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap"
)

// FuzzMeterRecord meters a call and an instance through the spool as a
// worker does and decodes the spooled records as the publisher and the
// billing ingest do. For a call id the worker accepts (and an instance id
// of the same shape), each record is spooled once, splits into its
// subject, its record id (the call id; "instance-" and the instance id)
// and a body that decodes to the record metered; the call's body is the
// document encoding/json makes of it.
func FuzzMeterRecord(f *testing.F) {
	f.Add("3f2a9c0e11d84b7a", "", "openfaas-fn", "echo", uint64(1), "ghcr.io/openfaas/alpine:latest", "w1", "gust-echo-1", gust.TriggerHTTP,
		int64(1795000000123456789), uint32(1500000), 200, gust.OutcomeOK, true, int64(10))
	f.Add("3f2a9c0e11d84b7a~2", "mine-1", "team-a", "orders", uint64(7), "acme/orders:2", "w2", "", gust.TriggerAsync,
		int64(0), uint32(0), 503, gust.OutcomeRejected, false, int64(0))
	f.Add("ev-GUST_ORDERS-42", "x \"quoted\"\n\x01\\ \u2028<>&é\xff", "team-a", "orders", uint64(2), "i", "w", "inst", gust.TriggerEvent,
		int64(-1), uint32(4294967295), 0, gust.OutcomeCrashed, false, int64(-5))
	f.Add("ev-1795000000.orders.created", "", "", "", uint64(18446744073709551615), "", "", "", "",
		int64(9223372036854775807)-int64(4294967295), uint32(1), 599, "", true, int64(9223372036854775807))
	f.Add("id with space", "", "ns", "fn", uint64(1), "i", "w", "inst 2", gust.TriggerHTTP, int64(1), uint32(1), 200, gust.OutcomeOK, false, int64(1))
	f.Add("", "", "ns", "fn", uint64(1), "i", "w", "", gust.TriggerHTTP, int64(1), uint32(1), 200, gust.OutcomeOK, false, int64(1))
	f.Add(strings.Repeat("a", 300), "", "ns", "fn", uint64(1), "i", "w", "i\nj", gust.TriggerHTTP, int64(1), uint32(1), 200, gust.OutcomeOK, false, int64(1))
	sp, err := spool.Open(f.TempDir(), 1<<30)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sp.Close() })
	m := NewMeter(nil, sp, nil, zap.NewNop())
	var mu sync.Mutex // one spool for every input: take what was just metered
	f.Fuzz(func(t *testing.T, callID, callerID, ns, fn string, version uint64, image, wk, instance, trigger string,
		startNs int64, durNs uint32, status int, outcome string, cold bool, bytes int64) {
		mu.Lock()
		defer mu.Unlock()
		start := time.Unix(0, startNs).UTC()
		rec := gust.CallRecord{
			CallID: callID, CallerID: callerID, Namespace: ns, Function: fn, Version: version, Image: image,
			Worker: wk, Instance: instance, Trigger: trigger, Start: start, End: start.Add(time.Duration(durNs)),
			DurationNs: int64(durNs), BilledNs: int64(durNs), MemoryMiB: bytes >> 20, ColdStart: cold,
			InitNs: int64(durNs) / 3, Status: status, Outcome: outcome, BytesIn: bytes, BytesOut: -bytes,
		}
		inst := gust.InstanceRecord{Instance: instance, Namespace: ns, Function: fn, Worker: wk, MemoryMiB: bytes,
			Ready: start, Stopped: rec.End, PausedMs: int64(durNs) / 2}
		m.RecordCall(&rec)
		m.RecordInstance(&inst)
		spooled := sp.Take(10)
		var seqs []uint64
		for _, r := range spooled {
			seqs = append(seqs, r.Seq)
		}
		if err := sp.Ack(seqs...); err != nil {
			t.Fatal(err)
		}
		if !worker.ValidCallID(callID) || !worker.ValidCallID(instance) {
			return // the worker refuses such a call; its instances are named by Gust
		}
		if len(spooled) != 2 {
			t.Fatalf("metering call %q and instance %q spooled %d records, want 2", callID, instance, len(spooled))
		}
		subject, id, data, ok := splitRecord(spooled[0].Data)
		if !ok || subject != SubjectMeterCalls || id != callID {
			t.Fatalf("spooled call record %q splits into %q, %q, %v", spooled[0].Data, subject, id, ok)
		}
		var got gust.CallRecord
		if err := got.DecodeJSON(data); err != nil {
			t.Fatalf("call record %s does not decode: %v", data, err)
		}
		if !got.Start.Equal(rec.Start) || !got.End.Equal(rec.End) {
			t.Fatalf("call record times %v..%v decode as %v..%v", rec.Start, rec.End, got.Start, got.End)
		}
		// What encoding/json makes of the record (invalid UTF-8 replaced
		// byte by byte) is what must come back.
		std, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		var want gust.CallRecord
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		got.Start, got.End, want.Start, want.End = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if got != want {
			t.Fatalf("call record round trip:\n got %+v\nwant %+v", got, want)
		}
		var a, b map[string]any
		if err := json.Unmarshal(std, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("AppendJSON made\n%s\nencoding/json makes\n%s", data, std)
		}
		subject, id, data, ok = splitRecord(spooled[1].Data)
		if !ok || subject != SubjectMeterInstances || id != "instance-"+instance {
			t.Fatalf("spooled instance record %q splits into %q, %q, %v", spooled[1].Data, subject, id, ok)
		}
		var gotInst gust.InstanceRecord
		if err := json.Unmarshal(data, &gotInst); err != nil {
			t.Fatalf("instance record %s does not decode: %v", data, err)
		}
		if !gotInst.Ready.Equal(inst.Ready) || !gotInst.Stopped.Equal(inst.Stopped) || gotInst.Instance != inst.Instance ||
			gotInst.MemoryMiB != inst.MemoryMiB || gotInst.PausedMs != inst.PausedMs || gotInst.Namespace != want.Namespace {
			t.Fatalf("instance record round trip: got %+v, want %+v", gotInst, inst)
		}
	})
}
