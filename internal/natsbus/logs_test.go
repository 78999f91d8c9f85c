package natsbus_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap/zaptest"
)

// readAll reads the lines q selects (not following).
func readAll(t *testing.T, l *natsbus.Logs, q gust.LogQuery) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []string
	if err := l.ReadLogs(ctx, q, func(line *gust.LogLine) error {
		out = append(out, line.Instance+":"+line.Text)
		return nil
	}); err != nil {
		t.Fatalf("read logs %+v: %v", q, err)
	}
	return out
}

// TestLogs_WorkerWritesGatewayReads: lines a worker adds are read back by
// a gateway, per function, instance, since and tail; follow delivers a
// line added after the query began; the events user can neither write
// nor read them.
func TestLogs_WorkerWritesGatewayReads(t *testing.T) {
	srv := mustProvisioned(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wk, err := natsbus.OpenLogs(ctx, natsbustest.MustConnectAs(t, srv, natsbus.UserWorker), natsbus.LogLimits{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("worker opens the log stream: %v", err)
	}
	gw, err := natsbus.OpenLogs(ctx, natsbustest.MustConnectAs(t, srv, natsbus.UserGateway), natsbus.LogLimits{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("gateway opens the log stream: %v", err)
	}
	t0 := time.Now().UTC()
	add := func(fn, inst, text string, at time.Time) {
		wk.AddLog(&gust.LogLine{Name: fn, Namespace: gust.DefaultNamespace, Instance: inst, Timestamp: at, Text: text, Stream: "stdout"})
	}
	for i := 0; i < 5; i++ {
		add("f", "i1", fmt.Sprintf("one %d", i), t0.Add(time.Duration(i)*time.Second))
		add("f", "i2", fmt.Sprintf("two %d", i), t0.Add(time.Duration(i)*time.Second))
		add("g", "i3", fmt.Sprintf("other %d", i), t0)
	}
	q := gust.LogQuery{Namespace: gust.DefaultNamespace, Name: "f"}
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n := len(readAll(t, gw, q)); n != 10 {
			return fmt.Errorf("%d lines of f, want 10", n)
		}
		return nil
	})
	if got := readAll(t, gw, gust.LogQuery{Namespace: gust.DefaultNamespace, Name: "f", Instance: "i2"}); strings.Join(got, ",") != "i2:two 0,i2:two 1,i2:two 2,i2:two 3,i2:two 4" {
		t.Errorf("instance i2: %v", got)
	}
	if got := readAll(t, gw, gust.LogQuery{Namespace: gust.DefaultNamespace, Name: "f", Tail: 3}); strings.Join(got, ",") != "i2:two 3,i1:one 4,i2:two 4" {
		t.Errorf("tail 3: %v", got)
	}
	if got := readAll(t, gw, gust.LogQuery{Namespace: gust.DefaultNamespace, Name: "f", Since: t0.Add(4 * time.Second)}); strings.Join(got, ",") != "i1:one 4,i2:two 4" {
		t.Errorf("since the 5th second: %v", got)
	}
	if got := readAll(t, gw, gust.LogQuery{Namespace: gust.DefaultNamespace, Name: "nobody"}); len(got) != 0 {
		t.Errorf("a function without lines: %v", got)
	}

	t.Run("Follow", func(t *testing.T) {
		fctx, fcancel := context.WithCancel(ctx)
		defer fcancel()
		var mu sync.Mutex
		var got []string
		done := make(chan error, 1)
		go func() {
			done <- gw.ReadLogs(fctx, gust.LogQuery{Namespace: gust.DefaultNamespace, Name: "f", Tail: 1, Follow: true}, func(l *gust.LogLine) error {
				mu.Lock()
				got = append(got, l.Text)
				mu.Unlock()
				return nil
			})
		}()
		check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(got) == 0 {
				return fmt.Errorf("no line yet")
			}
			return nil
		})
		add("f", "i1", "later", time.Now())
		check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(got, ",") != "two 4,later" {
				return fmt.Errorf("followed %v, want the last line then the new one", got)
			}
			return nil
		})
		fcancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("follow ended with %v, want nil once its context ended", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("follow did not end with its context")
		}
	})

	mustRefuse(t, srv, natsbus.UserEvents, []string{"gust.logs.openfaas-fn.f", "$JS.API.CONSUMER.CREATE.GUST_LOGS"}, []string{"gust.logs.>"})
	mustRefuse(t, srv, natsbus.UserGateway, []string{"gust.logs.openfaas-fn.f"}, []string{"gust.logs.>"})
	mustRefuse(t, srv, natsbus.UserScheduler, []string{"gust.logs.openfaas-fn.f"}, []string{"gust.logs.>"})
	mustAllow(t, srv, natsbus.UserWorker, []string{"gust.logs.openfaas-fn.f"}, nil)
}

// TestLogs_Bound: a function that prints 100 MB leaves the stream within
// its bound in bytes, with its newest lines kept, and within its bound in
// lines per function.
func TestLogs_Bound(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100 MB")
	}
	b := natsbustest.MustOpenBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lim := natsbus.LogLimits{MaxBytes: 8 << 20, MaxPerFunction: 300}
	logs, err := natsbus.OpenLogs(ctx, b, lim, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// A quiet function, whose lines the chatty one must not push out
	// entirely: the per-function bound leaves room for them.
	logs.AddLog(&gust.LogLine{Name: "quiet", Namespace: gust.DefaultNamespace, Instance: "q", Timestamp: time.Now(), Text: "still here"})
	text := strings.Repeat("x", gust.MaxLogLine-16)
	const total = 100 << 20
	n := total / gust.MaxLogLine
	for i := 0; i < n; i++ {
		logs.AddLog(&gust.LogLine{Name: "chatty", Namespace: gust.DefaultNamespace, Instance: "c", Timestamp: time.Now(), Text: fmt.Sprintf("%08d %s", i, text)})
		if i%512 == 0 {
			_ = b.NC.Flush() // keep the client's buffer from overflowing
		}
	}
	if err := b.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	last := fmt.Sprintf("%08d ", n-1)
	check.For(t, time.Minute, 100*time.Millisecond, func() error {
		got := readAll(t, logs, gust.LogQuery{Namespace: gust.DefaultNamespace, Name: "chatty", Tail: 1})
		if len(got) != 1 || !strings.HasPrefix(got[0], "c:"+last) {
			return fmt.Errorf("the newest line is not there yet")
		}
		return nil
	})
	s, err := b.JS.Stream(ctx, natsbus.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > uint64(lim.MaxBytes) {
		t.Errorf("the stream holds %d bytes, over its bound %d", info.State.Bytes, lim.MaxBytes)
	}
	if info.State.Msgs > uint64(lim.MaxPerFunction)+1 {
		t.Errorf("the stream holds %d lines, over its bound of %d per function (2 functions)", info.State.Msgs, lim.MaxPerFunction)
	}
	if got := readAll(t, logs, gust.LogQuery{Namespace: gust.DefaultNamespace, Name: "quiet"}); len(got) != 1 {
		t.Errorf("the quiet function's lines: %v, want its one line kept", got)
	}
	t.Logf("%d lines of %d bytes written; the stream holds %d lines, %d bytes", n, gust.MaxLogLine, info.State.Msgs, info.State.Bytes)
}
