package scheduler_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/gustfaas/gust/scheduler"
	"go.uber.org/zap/zaptest"
)

// testTTL is the leader lease's TTL in these tests: short, so that a
// lease left by a dead leader runs out soon.
const testTTL = time.Second

// MustLeases opens the lease bucket with testTTL.
func MustLeases(tb testing.TB, bus *natsbus.Bus) *natsbus.Table[gust.Lease] {
	tb.Helper()
	t, err := natsbus.OpenTable[gust.Lease](context.Background(), bus, natsbus.TableConfig{Bucket: natsbus.BucketLeader, TTL: testTTL, Memory: true})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// MustStartLeased starts scheduler id, one of several electing their
// leader in leases; its reconcile loop runs every reconcile.
func MustStartLeased(tb testing.TB, st *gust.State, bus *natsbus.Bus, leases gust.Table[gust.Lease], id string, reconcile time.Duration) *scheduler.Scheduler {
	tb.Helper()
	cfg := scheduler.DefaultConfig()
	cfg.ID = id
	cfg.LeaseTTL = testTTL
	cfg.ReconcileInterval = reconcile
	cfg.PrepareTimeout = 5 * time.Second
	s := scheduler.New(cfg, st, bus, zaptest.NewLogger(tb)).WithLeases(leases)
	if err := s.Start(context.Background()); err != nil {
		tb.Fatalf("start scheduler %s: %v", id, err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// placeRequest asks for a placement through the bus, as a gateway does.
func placeRequest(ctx context.Context, bus *natsbus.Bus, name string) (gust.Placement, error) {
	var rep gust.PlaceReply
	if err := bus.Request(ctx, gust.SubjectPlace, gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: name}, &rep); err != nil {
		return gust.Placement{}, err
	}
	return rep.Placement, rep.Err()
}

// holder returns who holds the lease.
func holder(tb testing.TB, leases gust.Table[gust.Lease]) string {
	tb.Helper()
	l, _, err := leases.Get(context.Background(), gust.LeaderKey)
	if err != nil {
		return fmt.Sprintf("(none: %v)", err)
	}
	return l.Holder
}

// TestLeader_Takeover: of two schedulers, the first leads and the other
// stands by, and place requests are answered whichever of them takes
// them. The leader dies without giving its lease up; a place request made
// at once is held by the standby until the lease runs out and it leads,
// then answered.
func TestLeader_Takeover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, bus := natsbustest.MustOpenState(t)
	leases := MustLeases(t, bus)
	MustFakeWorker(t, st, bus, "w1", gust.Reply{})
	MustDeploy(t, st, "hello", 1, nil)
	MustDeploy(t, st, "after", 1, nil)
	s1 := MustStartLeased(t, st, bus, leases, "s1", time.Hour)
	s2 := MustStartLeased(t, st, bus, leases, "s2", time.Hour)
	if !s1.Leading() || s2.Leading() || holder(t, leases) != "s1" {
		t.Fatalf("leading s1=%v s2=%v, lease held by %q; want s1 alone", s1.Leading(), s2.Leading(), holder(t, leases))
	}
	// The queue group hands requests to both: the standby's go on to
	// the leader.
	for i := 0; i < 6; i++ {
		pl, err := placeRequest(ctx, bus, "hello")
		if got, want := fmt.Sprint(pl.Workers, err), "[w1] <nil>"; got != want {
			t.Fatalf("place %d = %s, want %s", i, got, want)
		}
	}

	if err := s1.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	pl, err := placeRequest(ctx, bus, "after")
	if got, want := fmt.Sprint(pl.Workers, err), "[w1] <nil>"; got != want {
		t.Fatalf("place right after the leader died = %s, want %s", got, want)
	}
	if !s2.Leading() || holder(t, leases) != "s2" {
		t.Fatalf("after the answer: s2 leading %v, lease held by %q; want s2", s2.Leading(), holder(t, leases))
	}
	t.Logf("s2 answered %v after s1 died (lease TTL %v)", time.Since(killed), testTTL)
}

// TestLeader_CleanStop: a leader that stops gives its lease up, and the
// standby takes it at its next look, without waiting for it to expire.
func TestLeader_CleanStop(t *testing.T) {
	st, bus := natsbustest.MustOpenState(t)
	leases := MustLeases(t, bus)
	s1 := MustStartLeased(t, st, bus, leases, "s1", time.Hour)
	s2 := MustStartLeased(t, st, bus, leases, "s2", time.Hour)
	if !s1.Leading() || s2.Leading() {
		t.Fatalf("leading s1=%v s2=%v, want s1 alone", s1.Leading(), s2.Leading())
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if got := holder(t, leases); got != "" {
		t.Fatalf("lease held by %q after s1 closed, want given up (\"\")", got)
	}
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !s2.Leading() {
			return fmt.Errorf("s2 does not lead")
		}
		return nil
	})
	if got := holder(t, leases); got != "s2" {
		t.Errorf("lease held by %q, want s2", got)
	}
}

// TestLeader_OnlyLeaderReconciles: while another holds the lease, a
// standby neither places the function its reconcile loop would place
// nor answers place requests itself: it holds them. Once the other stops
// renewing, the lease runs out, the standby leads, reconciles and answers.
func TestLeader_OnlyLeaderReconciles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, bus := natsbustest.MustOpenState(t)
	leases := MustLeases(t, bus)
	MustFakeWorker(t, st, bus, "w1", gust.Reply{})
	key := MustDeploy(t, st, "hello", 1, nil) // past the deploy grace

	// A leader that renews its lease but serves nothing.
	rev, err := leases.Create(ctx, gust.LeaderKey, gust.Lease{Holder: "ghost"})
	if err != nil {
		t.Fatal(err)
	}
	stopRenew := make(chan struct{})
	var renewing sync.WaitGroup
	renewing.Add(1)
	go func() {
		defer renewing.Done()
		tk := time.NewTicker(testTTL / 5)
		defer tk.Stop()
		for {
			select {
			case <-stopRenew:
				return
			case <-tk.C:
				if r, err := leases.Update(ctx, gust.LeaderKey, gust.Lease{Holder: "ghost"}, rev); err == nil {
					rev = r
				}
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stopRenew:
		default:
			close(stopRenew)
		}
		renewing.Wait()
	})

	s := MustStartLeased(t, st, bus, leases, "s1", 10*time.Millisecond)
	answered := make(chan error, 1)
	go func() {
		_, err := placeRequest(ctx, bus, "hello")
		answered <- err
	}()
	// Many reconcile intervals and lease renewals pass.
	time.Sleep(3 * testTTL)
	if s.Leading() {
		t.Fatal("s1 leads while ghost renews its lease")
	}
	if _, _, err := st.Placements.Get(ctx, key); err == nil {
		t.Fatal("a standby placed the function")
	}
	select {
	case err := <-answered:
		t.Fatalf("a standby answered a place request while ghost led: %v", err)
	default:
	}

	close(stopRenew)
	renewing.Wait()
	if err := <-answered; err != nil {
		t.Fatalf("place request held across the takeover: %v", err)
	}
	if !s.Leading() {
		t.Error("s1 answered but does not lead")
	}
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		pl, _, err := st.Placements.Get(ctx, key)
		if got, want := fmt.Sprint(pl.Workers), "[w1]"; err != nil || got != want {
			return fmt.Errorf("placement %s (%v), want %s", got, err, want)
		}
		return nil
	})
}

// TestLeader_TakesBackOwnLease: a lease in a scheduler's own name (it
// stopped counting on it when it could not renew it in time, or it
// restarted under the same id) is taken back at once, without waiting
// for it to run out; one in another's name is not.
func TestLeader_TakesBackOwnLease(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)
	leases := MustLeases(t, bus)
	if _, err := leases.Create(ctx, gust.LeaderKey, gust.Lease{Holder: "s1"}); err != nil {
		t.Fatal(err)
	}
	s2 := MustStartLeased(t, st, bus, leases, "s2", time.Hour)
	s1 := MustStartLeased(t, st, bus, leases, "s1", time.Hour)
	if !s1.Leading() || s2.Leading() {
		t.Errorf("leading s1=%v s2=%v; want s1, which took its own lease back, alone", s1.Leading(), s2.Leading())
	}
}
