package main

// Async kill test: `gust up` runs as a subprocess with async calls queued
// in JetStream and is killed with SIGKILL (kill -9) while the dispatcher
// works through them, then restarted on the same data directory and
// ports. No accepted call may be lost, none may run to completion twice,
// and each succeeded call has exactly one billing record of status 200.
//
// It reuses the subprocess helpers of killtest_test.go (roleSet, roleProc,
// freePort, cleanupWorker, containerIDSet, killClient, firstN).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/fnbuild"
	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

const (
	akillFunction = "akill"
	akillCalls    = 40
	akillQuery    = "stream=3" // three lines 100ms apart: a run takes ~200ms
	// akillRunTakes is the least a run of ?stream=3 takes when nothing
	// cuts it (200ms, less a margin for the jitter of the Docker log
	// timestamps); a run of the killed process that logged "done" sooner
	// was cut short.
	akillRunTakes = 180 * time.Millisecond
	akillKillFrom = 1500 * time.Millisecond // after the first enqueue
	// akillTimeout is the function's gust.timeout. The dispatcher's
	// consumer gives a delivery AckWait = 1.5×timeout + 30s before
	// JetStream hands it out again, and the deliveries the killed process
	// held come back only then: 2 minutes at the default timeout of 60s,
	// 45s at 10s (the calls take 200ms).
	akillTimeout = "10s"
	akillSettle  = 90 * time.Second
)

// akillImage builds testdata/functions/misbehave under a tag of the
// test's own and removes that tag at the end. The shared tag
// (imageTag("misbehave")) is rebuilt by every test binary on the host
// from whatever source it has, and a misbehave from an older source logs
// no "done" lines, which this test counts.
func akillImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	tag := fmt.Sprintf("gust-test/misbehave:akill-%d-%s", os.Getpid(), strings.ToLower(t.Name()))
	rt, err := docker.New(docker.Config{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := fnbuild.Build(ctx, rt, testImages["misbehave"], tag, io.Discard); err != nil {
		t.Fatalf("build misbehave: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{}); err != nil {
			t.Logf("remove image %s: %v", tag, err)
		}
	})
	return tag
}

// akillRun is one run of the function as its container logged it.
type akillRun struct {
	id, attempt string
	container   string
	start, done time.Time // done is zero when it logged no "done" line
	dead        bool      // logged by a container of the killed process
}

// cut says whether a run of the killed process was cut short by the kill:
// it never logged "done", or logged it after the kill (the handler was
// still running when the process died: misbehave logs "done" also when
// its request context ends, as it does once the connection drops), or
// sooner than a whole run takes.
func (r *akillRun) cut(killAt time.Time) bool {
	return r.done.IsZero() || !r.done.Before(killAt) || r.done.Sub(r.start) < akillRunTakes
}

func (r *akillRun) String() string {
	where := "running"
	if r.dead {
		where = "killed"
	}
	done := "no done line"
	if !r.done.IsZero() {
		done = "done after " + r.done.Sub(r.start).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("attempt %s in container %.12s of the %s process (%s)", r.attempt, r.container, where, done)
}

// akillLogs reads the whole stdout+stderr of container cid with the
// Docker daemon's timestamps and returns the runs misbehave logged ("call
// <id> attempt <n>" ... "done <id> attempt <n>"). internal/docker's
// TailLogs gives no timestamps, and they tell a run cut by the kill from
// a whole one.
func akillLogs(ctx context.Context, cli *client.Client, cid string, dead bool) ([]*akillRun, error) {
	rc, err := cli.ContainerLogs(ctx, cid, container.LogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true})
	if err != nil {
		return nil, fmt.Errorf("logs of %.12s: %w", cid, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil {
		return nil, fmt.Errorf("read logs of %.12s: %w", cid, err)
	}
	var runs []*akillRun
	open := map[string][]*akillRun{} // "id attempt" → runs without "done" yet
	for _, line := range strings.Split(buf.String(), "\n") {
		ts, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 3 {
			f = append(f, "") // a sync call has no X-Gust-Attempt
		}
		if len(f) != 4 || f[2] != "attempt" || (f[0] != "call" && f[0] != "done") {
			continue
		}
		key := f[1] + " " + f[3]
		if f[0] == "call" {
			r := &akillRun{id: f[1], attempt: f[3], container: cid, start: at, dead: dead}
			runs = append(runs, r)
			open[key] = append(open[key], r)
			continue
		}
		if q := open[key]; len(q) > 0 {
			q[0].done, open[key] = at, q[1:]
		}
	}
	return runs, nil
}

// akillAllLogs reads the runs logged by the containers of worker wid,
// stopped ones included, but those in skip.
func akillAllLogs(t *testing.T, rt *docker.Runtime, cli *client.Client, wid string, skip map[string]bool, dead bool) (runs []*akillRun, cids []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := rt.List(ctx, map[string]string{gust.LabelWorker: wid})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		// Network holders are sandboxes, not instances: they run no
		// function and keep no logs.
		if skip[c.ID] || c.Labels[docker.LabelHolder] == "true" {
			continue
		}
		rs, err := akillLogs(ctx, cli, c.ID, dead)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, rs...)
		cids = append(cids, c.ID)
	}
	return runs, cids
}

// akillStatus is the answer of GET /system/invocations/{callId} for an
// async call.
type akillStatus struct {
	gust.AsyncStatus
	Records []gust.CallRecord `json:"records"`
}

// akillGetStatus gets GET /system/invocations/{id}.
func akillGetStatus(c *http.Client, base, id string) (akillStatus, error) {
	var st akillStatus
	resp, err := c.Get(base + "/system/invocations/" + id)
	if err != nil {
		return st, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("GET /system/invocations/%s: %d %s", id, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("GET /system/invocations/%s: %v in %q", id, err, b)
	}
	return st, nil
}

// akillRecords200 counts the records of call id (of its attempts: id,
// id~2, ...) with status 200 and describes the others it has.
func akillRecords200(id string, st akillStatus) (n int, other []string) {
	for _, r := range st.Records {
		if r.CallID != id && !strings.HasPrefix(r.CallID, id+"~") {
			other = append(other, "record of another call "+r.CallID)
			continue
		}
		if r.Status == 200 {
			n++
		} else {
			other = append(other, fmt.Sprintf("%s: %d %s", r.CallID, r.Status, r.Outcome))
		}
	}
	return n, other
}

// akillDeploy deploys misbehave (image) as name with labels.
func akillDeploy(t *testing.T, c *http.Client, base, name, image string, labels map[string]string) {
	t.Helper()
	spec, _ := json.Marshal(map[string]any{"service": name, "image": image, "labels": labels})
	resp, err := c.Post(base+"/system/functions", "application/json", bytes.NewReader(spec))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		t.Fatalf("deploy: %d %s", resp.StatusCode, b)
	}
}

// akillAtDeath serves a copy of the killed process's JetStream files with
// `gust nats` and reads there what the process left: the status of each
// call when it died, and the state of the function's async consumer.
func akillAtDeath(t *testing.T, rs *roleSet, data string, ids []string) (map[string]gust.AsyncStatus, string) {
	t.Helper()
	snap := filepath.Join(rs.dir, "at-death")
	if err := os.CopyFS(filepath.Join(snap, "nats"), os.DirFS(filepath.Join(data, "nats"))); err != nil {
		t.Fatalf("copy the JetStream files of the killed process: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	n := rs.start("nats-at-death", "nats", "--listen", addr, "--data", snap)
	defer n.stop(10 * time.Second)
	rs.waitTCP(n, addr, 30*time.Second)
	bus, err := natsbus.Connect(roleURL(t, addr, snap, natsbus.UserGateway), "gust-akill", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := bus.JS.KeyValue(ctx, natsbus.BucketCalls)
	if err != nil {
		t.Fatalf("calls bucket at death: %v", err)
	}
	out := map[string]gust.AsyncStatus{}
	for _, id := range ids {
		// Every call accepted has a status: "queued" is stored before
		// the enqueue.
		e, err := kv.Get(ctx, id)
		if err != nil {
			t.Errorf("status of call %s at death: %v", id, err)
			continue
		}
		var st gust.AsyncStatus
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			t.Fatalf("status of call %s at death: %v", id, err)
		}
		out[id] = st
	}
	desc := "consumer state unknown"
	if st, err := bus.JS.Stream(ctx, natsbus.StreamAsync); err == nil {
		durable := "async_" + gust.DefaultNamespace + "_" + akillFunction // the dispatcher's name of the consumer
		if cons, err := st.Consumer(ctx, durable); err == nil {
			ci, cerr := cons.Info(ctx)
			si, serr := st.Info(ctx)
			if cerr == nil && serr == nil {
				desc = fmt.Sprintf("stream %s holds %d messages; consumer %s: delivered up to stream seq %d, ack floor %d, %d ack pending, %d redelivered, %d pending",
					natsbus.StreamAsync, si.State.Msgs, durable, ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumAckPending, ci.NumRedelivered, ci.NumPending)
			}
		}
	}
	return out, desc
}

// TestAsyncNoLossKill: async calls wait in JetStream (one instance, two
// calls at a time) when gust up is killed with SIGKILL; it is restarted on
// the same data directory and ports. Every accepted call ends succeeded
// (or dead-lettered): none lost; no call runs to completion twice (only a
// run cut by the kill runs again, see checkAkillRuns); each succeeded call
// has exactly one record of status 200.
func TestAsyncNoLossKill(t *testing.T) {
	MustDocker(t)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	img := akillImage(t, cli) // its tag is removed last, after the containers
	var workerID string
	cleanupWorker(t, &workerID) // after the processes stopped
	rs := newRoleSet(t)
	data := filepath.Join(rs.dir, "data")
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	natsListen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	base := "http://" + listen
	args := []string{"up", "--listen", listen, "--nats-listen", natsListen, "--data", data, "--network", testNetwork}
	c := killClient()
	defer c.CloseIdleConnections()
	rt, err := docker.New(docker.Config{Network: testNetwork}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	up := rs.start("up-1", args...)
	rs.waitHTTP(up, base+"/healthz", 60*time.Second)
	b, err := os.ReadFile(filepath.Join(data, "worker-id"))
	if err != nil {
		t.Fatal(err)
	}
	workerID = strings.TrimSpace(string(b))

	// One instance running two calls at a time: most calls wait queued in
	// JetStream. Quick retries, should an attempt fail.
	akillDeploy(t, c, base, akillFunction, img, map[string]string{
		gust.LabelScaleMax: "1", gust.LabelConcurrency: "2",
		gust.LabelRetryMinDelay: "100ms", gust.LabelRetryMaxDelay: "500ms",
		gust.LabelTimeout: akillTimeout,
	})
	// A sync call first, so that the instance is warm when the async
	// calls come and some of them complete before the kill.
	warm := time.Now()
	check.For(t, 60*time.Second, 200*time.Millisecond, func() error {
		st, _, body := call(t, http.MethodGet, base+"/function/"+akillFunction, "", gust.HeaderCallID, "akill-warm")
		if st != 200 {
			return fmt.Errorf("warm-up call: %d %s", st, body)
		}
		return nil
	})
	t.Logf("function warm after %s", time.Since(warm).Round(time.Millisecond))

	// Enqueue; kill -9 akillKillFrom after the first enqueue, whether or
	// not the enqueueing is over.
	var (
		accepted, refused []string
		killAt            time.Time
		first             = time.Now()
		killed            = make(chan struct{})
	)
	go func() {
		defer close(killed)
		time.Sleep(time.Until(first.Add(akillKillFrom)))
		killAt = time.Now()
		if err := up.kill9(); err != nil {
			t.Error(err)
		}
	}()
	for i := 0; i < akillCalls; i++ {
		resp, err := c.Post(base+"/async-function/"+akillFunction+"?"+akillQuery, "text/plain", strings.NewReader(fmt.Sprint(i)))
		if err != nil {
			refused = append(refused, err.Error())
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		id := resp.Header.Get(gust.HeaderCallID)
		if resp.StatusCode != http.StatusAccepted || id == "" {
			refused = append(refused, fmt.Sprintf("%d (X-Call-Id %q)", resp.StatusCode, id))
			continue
		}
		accepted = append(accepted, id)
	}
	enqueued := time.Since(first)
	<-killed
	t.Logf("%d calls accepted (202) in %s, %d not %v; kill -9 %s after the first enqueue",
		len(accepted), enqueued.Round(time.Millisecond), len(refused), firstN(refused, 3), killAt.Sub(first).Round(time.Millisecond))
	if len(accepted) < akillCalls/2 {
		t.Fatalf("only %d of %d calls accepted before the kill", len(accepted), akillCalls)
	}
	isAccepted := map[string]bool{}
	for _, id := range accepted {
		isAccepted[id] = true
	}

	// The killed process's containers outlive it: read their logs before
	// the restart removes them. A run in flight at the kill logs "done"
	// once its connection drops: wait (a little) for those lines.
	var deadRuns []*akillRun
	var deadCIDs []string
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		deadRuns, deadCIDs = akillAllLogs(t, rt, cli, workerID, nil, true)
		open := 0
		for _, r := range deadRuns {
			if r.done.IsZero() {
				open++
			}
		}
		if open == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(deadCIDs) == 0 {
		t.Fatalf("no container of worker %s left after kill -9", workerID)
	}
	warmDone := false
	for _, r := range deadRuns {
		warmDone = warmDone || (r.id == "akill-warm" && !r.done.IsZero())
	}
	if !warmDone {
		t.Fatalf("the function logged no \"done\" line for its warm-up call: is %s built from a misbehave that logs them?", img)
	}
	deadSet := map[string]bool{}
	for _, id := range deadCIDs {
		deadSet[id] = true
	}
	atDeath, consumer := akillAtDeath(t, rs, data, accepted)
	deathStates := map[string]int{}
	for _, st := range atDeath {
		deathStates[fmt.Sprintf("%s (attempt %d)", st.State, st.Attempts)]++
	}
	t.Logf("at death: calls %v; %s", deathStates, consumer)

	restart := time.Now()
	up2 := rs.start("up-2", args...)
	rs.waitHTTP(up2, base+"/healthz", 60*time.Second)
	t.Logf("restarted gust up answers /healthz after %s", time.Since(restart).Round(time.Millisecond))
	for id := range containerIDSet(t, workerID) {
		if deadSet[id] {
			t.Errorf("container %.12s left by the killed gust up still there after the restart", id)
		}
	}

	// Every accepted call ends succeeded or dead-lettered.
	final := map[string]akillStatus{}
	last := map[string]akillStatus{} // the last status seen of a call not settled
	var lastErr error
	pollFrom := time.Now()
	for time.Since(pollFrom) < akillSettle && len(final) < len(accepted) {
		for _, id := range accepted {
			if _, ok := final[id]; ok {
				continue
			}
			st, err := akillGetStatus(c, base, id)
			switch {
			case err != nil:
				lastErr = err
			case st.State == gust.AsyncSucceeded || st.State == gust.AsyncDeadLettered:
				final[id] = st
			default:
				last[id] = st
			}
		}
		if len(final) < len(accepted) {
			time.Sleep(250 * time.Millisecond)
		}
	}
	settled := time.Since(pollFrom)
	// The records of the attempts arrive through the metering stream: wait
	// (bounded) until each succeeded call has one of status 200, then look
	// once more a second later, so that a second one on its way shows too.
	recordsFrom := time.Now()
	for id, st := range final {
		for st.State == gust.AsyncSucceeded && time.Since(recordsFrom) < 30*time.Second {
			if n, _ := akillRecords200(id, st); n > 0 {
				break
			}
			time.Sleep(250 * time.Millisecond)
			if s2, err := akillGetStatus(c, base, id); err == nil {
				st = s2
			}
		}
		final[id] = st
	}
	recordsTook := time.Since(recordsFrom)
	time.Sleep(time.Second)
	for id := range final {
		if st, err := akillGetStatus(c, base, id); err == nil {
			final[id] = st
		}
	}
	// The runs of the restarted process, read before it stops.
	newRuns, newCIDs := akillAllLogs(t, rt, cli, workerID, deadSet, false)
	stopFrom := time.Now()
	up2.stop(30 * time.Second)
	t.Logf("calls settled %s after the restart answered (bound %s); their records %s later; containers: %d of the killed process, %d of the restarted one; gust up stopped (SIGTERM) in %s",
		settled.Round(time.Millisecond), akillSettle, recordsTook.Round(time.Millisecond),
		len(deadCIDs), len(newCIDs), time.Since(stopFrom).Round(time.Millisecond))

	// (1) None lost.
	counts := map[string]int{}
	var lost []string
	maxAttempts := 0
	for _, id := range accepted {
		st, ok := final[id]
		if !ok {
			lost = append(lost, id)
			continue
		}
		counts[st.State]++
		maxAttempts = max(maxAttempts, st.Attempts)
	}
	t.Logf("%d accepted: %d succeeded, %d dead-lettered, %d neither (most attempts of a call: %d)",
		len(accepted), counts[gust.AsyncSucceeded], counts[gust.AsyncDeadLettered], len(lost), maxAttempts)
	if len(lost) > 0 {
		var desc []string
		for _, id := range firstN(lost, 5) {
			desc = append(desc, fmt.Sprintf("%s: %s (attempt %d) at death, %s (attempt %d) at the end",
				id, atDeath[id].State, atDeath[id].Attempts, last[id].State, last[id].Attempts))
		}
		t.Errorf("%d of %d accepted calls neither succeeded nor dead-lettered %s after the restart (last error: %v), e.g. %v",
			len(lost), len(accepted), akillSettle, lastErr, desc)
	}

	// (2) No call ran to completion twice.
	tolerated := checkAkillRuns(t, accepted, isAccepted, deadRuns, newRuns, final, atDeath, killAt)

	// (3) Exactly one record of status 200 per succeeded call.
	for _, id := range accepted {
		st, ok := final[id]
		if !ok || st.State != gust.AsyncSucceeded {
			continue
		}
		n, other := akillRecords200(id, st)
		switch {
		case n == 1:
		case n == 2 && tolerated[id]:
			t.Logf("call %s: 2 records of status 200, one per whole run (the tolerated rerun)", id)
		default:
			t.Errorf("succeeded call %s (attempts %d) has %d records of status 200, want 1; other records: %v", id, st.Attempts, n, other)
		}
	}
}

// checkAkillRuns asserts that no accepted call ran to completion twice and
// logs the figures of the runs. It returns the calls tolerated to
// complete twice.
//
// A run cut by the kill (see akillRun.cut) runs again: that is the point
// of the queue. A run that completed before the kill should not: the
// dispatcher acknowledges the message only after it recorded the call
// succeeded, and a redelivery of a call already succeeded is acknowledged
// without running. But between the function's answer and that status
// write there is a window (the answer travels back through the worker,
// then one KV write: about a millisecond, which this measures): a kill
// inside it leaves the call "running" with its message unacknowledged, so
// it legitimately runs again. Such a rerun is tolerated only in that
// precise case, which the status the killed process left (atDeath, read
// from a copy of its JetStream files) tells: the earlier whole run is the
// killed process's, the call was not yet succeeded (nor dead-lettered)
// when the process died, and it completed once more, no more. A call that
// was succeeded at death and ran again is a duplicate, however close to
// the kill its first run ended.
func checkAkillRuns(t *testing.T, accepted []string, isAccepted map[string]bool, deadRuns, newRuns []*akillRun, final map[string]akillStatus, atDeath map[string]gust.AsyncStatus, killAt time.Time) map[string]bool {
	t.Helper()
	byID := map[string][]*akillRun{}
	for _, r := range append(append([]*akillRun{}, deadRuns...), newRuns...) {
		if isAccepted[r.id] {
			byID[r.id] = append(byID[r.id], r)
		}
	}
	var (
		deadWhole, deadCut, cutRerun, cutNotRerun, restarted int
		reruns, dups, notRun                                 []string
		tolerated                                            = map[string]bool{}
		windows                                              []time.Duration
	)
	for _, id := range accepted {
		runs := byID[id]
		if len(runs) == 0 {
			if st, ok := final[id]; ok && st.State == gust.AsyncSucceeded {
				notRun = append(notRun, id)
			}
			continue
		}
		var whole []*akillRun
		cut := false
		for _, r := range runs {
			switch {
			case r.dead && r.cut(killAt):
				deadCut++
				cut = true
			case r.dead:
				deadWhole++
				whole = append(whole, r)
				// From the run's "done" to the dead process recording
				// the call succeeded: the window of the comment above.
				if st, ok := atDeath[id]; ok && st.State == gust.AsyncSucceeded && fmt.Sprint(st.Attempts) == r.attempt {
					windows = append(windows, st.Updated.Sub(r.done))
				}
			default:
				restarted++
				if !r.done.IsZero() {
					whole = append(whole, r)
				}
			}
		}
		dst := atDeath[id]
		if len(runs) > 1 {
			desc := make([]string, len(runs))
			for i, r := range runs {
				desc[i] = r.String()
			}
			reruns = append(reruns, fmt.Sprintf("%s (%s, attempt %d, at death): %s", id, dst.State, dst.Attempts, strings.Join(desc, "; ")))
		}
		if cut {
			if len(runs) > 1 {
				cutRerun++
			} else {
				cutNotRerun++
			}
		}
		if len(whole) <= 1 {
			continue
		}
		first := whole[0]
		finished := dst.State == gust.AsyncSucceeded || dst.State == gust.AsyncDeadLettered
		if len(whole) == 2 && first.dead && !whole[1].dead && !finished {
			tolerated[id] = true
			t.Logf("call %s completed (attempt %s, done %s before the kill) but was %s (attempt %d) when the process died, and ran again (attempt %s): killed between the function's answer and the status write; tolerated",
				id, first.attempt, killAt.Sub(first.done).Round(time.Microsecond), dst.State, dst.Attempts, whole[1].attempt)
			continue
		}
		dups = append(dups, id)
	}
	sort.Slice(windows, func(i, j int) bool { return windows[i] < windows[j] })
	win := ""
	if len(windows) > 0 {
		win = fmt.Sprintf("; from a whole run's \"done\" to the status write: median %s, max %s",
			windows[len(windows)/2].Round(time.Microsecond), windows[len(windows)-1].Round(time.Microsecond))
	}
	t.Logf("runs: killed process %d whole, %d cut by the kill (%d of those calls ran again, %d not); restarted process %d; %d calls ran more than once, %d completed twice (%d tolerated)%s",
		deadWhole, deadCut, cutRerun, cutNotRerun, restarted, len(reruns), len(dups)+len(tolerated), len(tolerated), win)
	for _, r := range reruns {
		t.Logf("ran more than once: %s", r)
	}
	if len(notRun) > 0 {
		t.Errorf("%d succeeded calls have no run in the function's logs, e.g. %v", len(notRun), firstN(notRun, 5))
	}
	for _, id := range dups {
		t.Errorf("call %s ran to completion twice (it was %s, attempt %d, when the process died); see \"ran more than once\" above", id, atDeath[id].State, atDeath[id].Attempts)
	}
	return tolerated
}

// TestAsyncNoLossKillFirstDelivery: a call already succeeded does not run
// again when its message comes back as a first delivery, as it can after
// kill -9 (JetStream may not have kept the delivery). The test makes that delivery by
// enqueueing the call's request again under another message id, which is
// what the dispatcher sees after such a crash.
func TestAsyncNoLossKillFirstDelivery(t *testing.T) {
	const name = "afirst"
	MustDocker(t)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	img := akillImage(t, cli)
	var workerID string
	cleanupWorker(t, &workerID)
	rs := newRoleSet(t)
	data := filepath.Join(rs.dir, "data")
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	natsListen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	base := "http://" + listen
	c := killClient()
	defer c.CloseIdleConnections()
	rt, err := docker.New(docker.Config{Network: testNetwork}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	up := rs.start("up", "up", "--listen", listen, "--nats-listen", natsListen, "--data", data, "--network", testNetwork)
	rs.waitHTTP(up, base+"/healthz", 60*time.Second)
	b, err := os.ReadFile(filepath.Join(data, "worker-id"))
	if err != nil {
		t.Fatal(err)
	}
	workerID = strings.TrimSpace(string(b))
	// One call at a time: the calls run in the order enqueued.
	akillDeploy(t, c, base, name, img, map[string]string{gust.LabelScaleMax: "1", gust.LabelConcurrency: "1"})

	enqueue := func() string {
		t.Helper()
		var id string
		check.For(t, 30*time.Second, 200*time.Millisecond, func() error {
			resp, err := c.Post(base+"/async-function/"+name+"?stream=1", "text/plain", nil)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if id = resp.Header.Get(gust.HeaderCallID); resp.StatusCode != http.StatusAccepted || id == "" {
				return fmt.Errorf("enqueue: %d", resp.StatusCode)
			}
			return nil
		})
		return id
	}
	waitSucceeded := func(id string) akillStatus {
		t.Helper()
		var st akillStatus
		check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
			var err error
			if st, err = akillGetStatus(c, base, id); err == nil && st.State != gust.AsyncSucceeded {
				err = fmt.Errorf("call %s is %s (attempt %d)", id, st.State, st.Attempts)
			}
			return err
		})
		return st
	}
	id := enqueue()
	before := waitSucceeded(id)

	// What kill -9 can leave: the message of a call whose succeeded status
	// was written comes back as a first delivery.
	bus, err := natsbus.Connect(roleURL(t, natsListen, data, natsbus.UserGateway), "gust-akill", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	req, _ := json.Marshal(gust.AsyncRequest{
		CallID: id, Namespace: gust.DefaultNamespace, Function: name, Method: http.MethodPost, Path: "/",
		Query: "stream=1", Enqueued: before.Enqueued, Trigger: gust.TriggerAsync,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Enqueue(ctx, gust.SubjectAsyncPrefix+gust.FunctionKey(gust.DefaultNamespace, name), id+"-again", req); err != nil {
		t.Fatal(err)
	}
	// A call enqueued after it runs after it: once it succeeded, the
	// dispatcher has dealt with the first.
	waitSucceeded(enqueue())
	time.Sleep(500 * time.Millisecond) // for the last log lines
	runs, _ := akillAllLogs(t, rt, cli, workerID, nil, false)
	var ran []string
	for _, r := range runs {
		if r.id == id {
			ran = append(ran, r.String())
		}
	}
	after, err := akillGetStatus(c, base, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(ran) != 1 {
		t.Errorf("call %s, succeeded (attempt %d), ran %d times once its message came back as a first delivery, want once: %v; status now %s (attempt %d), %d records",
			id, before.Attempts, len(ran), ran, after.State, after.Attempts, len(after.Records))
	}
}
