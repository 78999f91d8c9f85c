package sqlite

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// TestStore_Prune: pruning deletes the call records of the hours before
// the horizon and no others; reports over the whole store still equal
// the sums of every record (from rollups); a report that starts inside a
// pruned hour counts that hour whole; records from before the horizon
// delivered again change nothing; ingest goes on while pruning.
func TestStore_Prune(t *testing.T) {
	rng := testRNG(t, 23)
	ctx := context.Background()
	s, _ := MustOpen(t)
	calls, insts := rollupRecords(rng, 4000)
	addRedelivered(t, rng, s, calls, insts)
	calls = firstByID(calls, func(r *gust.CallRecord) string { return r.CallID })
	insts = firstByID(insts, func(r *gust.InstanceRecord) string { return r.Instance })

	before := rollupWindow.from.Add(50*time.Hour + 25*time.Minute)
	horizon := before.Truncate(time.Hour)
	var gone int64
	for _, r := range calls {
		if r.Start.Before(horizon) {
			gone++
		}
	}
	// Ingest of newer records while pruning: neither waits for long or
	// fails.
	newer, _ := rollupRecords(rng, 500)
	for i := range newer {
		newer[i].CallID = "new-" + newer[i].CallID
		newer[i].Start = horizon.Add(time.Duration(rng.Int64N(int64(48 * time.Hour))))
	}
	newer = firstByID(newer, func(r *gust.CallRecord) string { return r.CallID })
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < len(newer); i += 50 {
			MustAddCalls(t, s, newer[i:min(i+50, len(newer))]...)
		}
	}()
	deleted, err := s.Prune(ctx, before)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if deleted != gone {
		t.Errorf("Prune deleted %d records, want %d (those before %s)", deleted, gone, horizon)
	}
	calls = append(calls, newer...)
	if got, err := s.RawFrom(ctx); err != nil || !got.Equal(horizon) {
		t.Errorf("RawFrom = %v, %v; want %v", got, err, horizon)
	}
	var kept int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM calls WHERE start_ns < ?`, horizon.UnixNano()).Scan(&kept); err != nil || kept != 0 {
		t.Errorf("%d records before the horizon left, %v", kept, err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM calls`).Scan(&kept); err != nil || kept != int64(len(calls))-gone {
		t.Errorf("%d records kept (%v), want %d", kept, err, int64(len(calls))-gone)
	}

	// Records before the horizon delivered again: left out.
	MustAddCalls(t, s, calls[:200]...)

	// Reports: the store's answer equals the sums of every record, the
	// pruned ones included, over a range widened to the whole pruned
	// hours it starts or ends in.
	widen := func(f gust.CallFilter) gust.CallFilter {
		if !f.From.IsZero() && f.From.Before(horizon) {
			f.From = f.From.Truncate(time.Hour)
		}
		if !f.To.IsZero() && f.To.Before(horizon) && !f.To.Equal(f.To.Truncate(time.Hour)) {
			f.To = f.To.Truncate(time.Hour).Add(time.Hour)
		}
		return f
	}
	for range 100 {
		f := randomUsageFilter(rng)
		for _, g := range groupings {
			got, gotInst, err := s.Usage(ctx, f, g)
			if err != nil {
				t.Fatal(err)
			}
			wf := f
			if f.From.IsZero() || f.To.IsZero() || f.From.Before(f.To) {
				wf = widen(f)
			}
			if want, _ := usageOf(calls, insts, wf, g); !reflect.DeepEqual(got, want) {
				t.Fatalf("Usage(%+v, %s) after pruning before %s:\ngot  %+v\nwant %+v", f, g, horizon, got, want)
			}
			// Instance records are not pruned: their report is exact.
			if _, wantInst := usageOf(calls, insts, f, g); !reflect.DeepEqual(gotInst, wantInst) {
				t.Fatalf("Usage(%+v, %s) instances:\ngot  %+v\nwant %+v", f, g, gotInst, wantInst)
			}
		}
	}

	// Pruning again at the same or an earlier time deletes nothing and
	// keeps the horizon.
	if n, err := s.Prune(ctx, horizon.Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("second Prune = %d, %v; want 0", n, err)
	}
	if got, _ := s.RawFrom(ctx); !got.Equal(horizon) {
		t.Errorf("RawFrom after an earlier Prune = %v, want %v", got, horizon)
	}
}
