package docker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
)

// frame is one frame of the Engine's multiplexed log stream.
func frame(stream byte, payload string) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = stream
	binary.BigEndian.PutUint32(b[4:], uint32(len(payload)))
	return append(b, payload...)
}

func TestDemuxLines(t *testing.T) {
	const t1, t2 = "2026-12-02T01:02:03.000000001Z", "2026-12-02T01:02:04.5Z"
	long := strings.Repeat("a", 40)
	var in bytes.Buffer
	in.Write(frame(1, t1+" hello\n"))
	in.Write(frame(2, t1+" oops\n"))
	in.Write(frame(1, t2+" two\nlines\n"))          // one write, two lines
	in.Write(frame(1, t2+" part one, "))            // a line the Engine cut ...
	in.Write(frame(2, t2+" in between\n"))          // ... while stderr goes on
	in.Write(frame(1, t1+" part two\n"))            // ... ends in a later frame
	in.Write(frame(1, t2+" "+long+"\n"))            // over the bound: cut
	in.Write(frame(1, "no timestamp here\n"))       // kept, stamped when read
	in.Write(frame(2, t2+" no newline at the end")) // the stream ends with it
	var got []string
	var stamps []time.Time
	err := demuxLines(&in, 32, func(stream string, ts time.Time, text string) {
		got = append(got, stream+":"+text)
		stamps = append(stamps, ts)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"stdout:hello", "stderr:oops", "stdout:two", "stdout:lines",
		"stderr:in between", "stdout:part one, part two",
		"stdout:" + long[:32] + "…", "stdout:no timestamp here", "stderr:no newline at the end",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lines:\n got %q\nwant %q", got, want)
	}
	if ts, _ := time.Parse(time.RFC3339Nano, t1); len(stamps) > 0 && !stamps[0].Equal(ts) {
		t.Errorf("first line's time %v, want %v", stamps[0], ts)
	}
	if ts, _ := time.Parse(time.RFC3339Nano, t2); len(stamps) > 5 && !stamps[5].Equal(ts) {
		t.Errorf("a joined line has the time of its first part: %v, want %v", stamps[5], ts)
	}
}

func TestDemuxLines_TruncatedStream(t *testing.T) {
	b := frame(1, "2026-12-02T01:02:03Z hello\n")
	err := demuxLines(bytes.NewReader(b[:len(b)-3]), 1024, func(string, time.Time, string) {})
	if err == nil {
		t.Error("a stream cut inside a frame: no error")
	}
}

// TestFollowLogs: a container's lines come as it writes them, and the
// follow ends, with the last line read, when the container exits.
func TestFollowLogs(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := r.Start(ctx, testSpec(t))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	var mu sync.Mutex
	var lines []string
	done := make(chan error, 1)
	go func() {
		done <- r.FollowLogs(ctx, inst.ID, time.Time{}, func(stream string, ts time.Time, text string) {
			mu.Lock()
			lines = append(lines, stream+":"+text)
			mu.Unlock()
		})
	}()
	MustHealthy(t, inst)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "fn: listening on :8080") }) {
			return fmt.Errorf("lines so far: %q", lines)
		}
		return nil
	})
	get("http://" + inst.Addr + "/?exit=1") // the function exits mid-answer
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("FollowLogs: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("FollowLogs did not end when the container exited")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, "fn: exiting with code 3") }) {
		t.Errorf("lines %q: the last one is missing", lines)
	}
	if err := r.FollowLogs(ctx, "no-such-container", time.Time{}, func(string, time.Time, string) {}); !errors.Is(err, gust.ErrInstanceNotFound) {
		t.Errorf("FollowLogs of an unknown container: %v, want ErrInstanceNotFound", err)
	}
}
