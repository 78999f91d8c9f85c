package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
)

// readLogs reads the lines kept of function name through GET /system/logs
// with the admin's credentials (follow=false).
func readLogs(tb testing.TB, m *UpMain, name, query string) []gust.LogLine {
	tb.Helper()
	st, h, body := call(tb, "GET", gw(m)+"/system/logs?name="+name+"&follow=false"+query, "")
	if st != http.StatusOK {
		tb.Fatalf("GET /system/logs?name=%s%s: %d %s", name, query, st, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/x-ndjson" {
		tb.Errorf("Content-Type = %q, want application/x-ndjson", ct)
	}
	var out []gust.LogLine
	for _, l := range strings.Split(body, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		// Every line has OpenFaaS's fields.
		var raw map[string]any
		if err := json.Unmarshal([]byte(l), &raw); err != nil {
			tb.Fatalf("log line is not JSON: %q", l)
		}
		for _, k := range []string{"name", "namespace", "instance", "timestamp", "text"} {
			if _, ok := raw[k]; !ok {
				tb.Errorf("log line %s has no %q", l, k)
			}
		}
		var line gust.LogLine
		_ = json.Unmarshal([]byte(l), &line)
		out = append(out, line)
	}
	return out
}

// lineOf returns the line whose text contains s.
func lineOf(lines []gust.LogLine, s string) (gust.LogLine, bool) {
	for _, l := range lines {
		if strings.Contains(l.Text, s) {
			return l, true
		}
	}
	return gust.LogLine{}, false
}

// TestFunctionLogs: what instances print is read back through GET
// /system/logs after they are gone, each call's lines tied to it;
// follow=true streams a line printed after the request began; tail,
// 404, 401, 400 and a namespace key's scope.
func TestFunctionLogs(t *testing.T) {
	m := MustRunUp(t, "")
	// misbehave prints "call <X-Call-Id> attempt <n>" as each call begins
	// and "done ..." as it ends.
	mustDeploy(t, m, "talker", imageTag("misbehave"), map[string]string{gust.LabelIdleTimeout: "2s"})
	var ids []string
	for i := 0; i < 3; i++ {
		// Apart, so that no line of one call is read by the Engine
		// after the next one began (each is then tied to its call).
		time.Sleep(100 * time.Millisecond)
		st, h, body := call(t, "GET", gw(m)+"/function/talker/say", "")
		if st != http.StatusOK {
			t.Fatalf("call: %d %s", st, body)
		}
		ids = append(ids, h.Get(gust.HeaderCallID))
	}
	// The idle instance stops; its lines stay.
	waitContainers(t, m, "talker", 0, 30*time.Second)
	var lines []gust.LogLine
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		lines = readLogs(t, m, "talker", "&namespace="+gust.DefaultNamespace)
		for _, id := range ids {
			if _, ok := lineOf(lines, "done "+id); !ok {
				return fmt.Errorf("no line of call %s in %d lines", id, len(lines))
			}
		}
		return nil
	})
	for _, id := range ids {
		l, _ := lineOf(lines, "call "+id)
		if l.Name != "talker" || l.Namespace != gust.DefaultNamespace || l.Instance == "" || l.Timestamp.IsZero() || l.Stream != "stdout" {
			t.Errorf("line of call %s: %+v, want its function, namespace, instance, time and stream", id, l)
		}
		// One call at a time: each line is tied to its call.
		if l.CallID != id {
			t.Errorf("line %q: call id %q, want %q", l.Text, l.CallID, id)
		}
	}

	t.Run("Tail", func(t *testing.T) {
		got := readLogs(t, m, "talker", "&tail=1")
		if len(got) != 1 || got[0].Text != lines[len(lines)-1].Text {
			t.Errorf("tail=1: %+v, want the last line %q", got, lines[len(lines)-1].Text)
		}
	})
	t.Run("Since", func(t *testing.T) {
		if got := readLogs(t, m, "talker", "&since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); len(got) != 0 {
			t.Errorf("since an hour ahead: %d lines, want none", len(got))
		}
		if got := readLogs(t, m, "talker", "&since=1h"); len(got) != len(lines) {
			t.Errorf("since=1h: %d lines, want %d", len(got), len(lines))
		}
	})

	t.Run("Follow", func(t *testing.T) {
		c := gateway.NewClient(gw(m))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var mu sync.Mutex
		var got []gust.LogLine
		done := make(chan error, 1)
		began := time.Now()
		go func() {
			done <- c.Logs(ctx, gust.LogQuery{Name: "talker", Follow: true, Since: began}, "", func(l gust.LogLine) error {
				mu.Lock()
				got = append(got, l)
				mu.Unlock()
				return nil
			})
		}()
		time.Sleep(200 * time.Millisecond) // the request is under way; the call comes after
		st, h, body := call(t, "GET", gw(m)+"/function/talker/again", "")
		if st != http.StatusOK {
			t.Fatalf("call: %d %s", st, body)
		}
		id := h.Get(gust.HeaderCallID)
		check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := lineOf(got, "done "+id); !ok {
				return fmt.Errorf("the follow stream has %d lines, none of call %s", len(got), id)
			}
			return nil
		})
		cancel() // the client leaves: the stream ends
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("follow ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the follow stream did not end after the client left")
		}
	})

	t.Run("Errors", func(t *testing.T) {
		for _, tc := range []struct {
			query     string
			want      int
			field     string
			anonymous bool
		}{
			{query: "name=nosuchfn", want: 404},
			{query: "name=talker&namespace=other", want: 404},
			{query: "name=talker", want: 401, anonymous: true},
			{query: "", want: 400, field: "name"},
			{query: "name=talker&since=yesterday", want: 400, field: "since"},
			{query: "name=talker&tail=ten", want: 400, field: "tail"},
			{query: "name=talker&follow=maybe", want: 400, field: "follow"},
		} {
			var st int
			var body string
			if tc.anonymous {
				resp, err := anonClient(t).Get(gw(m) + "/system/logs?" + tc.query)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				st = resp.StatusCode
			} else {
				st, _, body = call(t, "GET", gw(m)+"/system/logs?"+tc.query, "")
			}
			if st != tc.want {
				t.Errorf("GET /system/logs?%s: %d %s, want %d", tc.query, st, body, tc.want)
				continue
			}
			if tc.field != "" {
				if eb := errorBody(t, body); eb.Field != tc.field {
					t.Errorf("GET /system/logs?%s: field %q, want %q", tc.query, eb.Field, tc.field)
				}
			}
		}
	})

	t.Run("NamespaceKey", func(t *testing.T) {
		ctx := context.Background()
		admin := gateway.NewClient(gw(m))
		for _, ns := range []string{"logs-a", "logs-b"} {
			if err := admin.CreateNamespace(ctx, gust.Namespace{Name: ns}); err != nil {
				t.Fatal(err)
			}
		}
		ka, err := admin.CreateKey(ctx, "logs-a", "reader")
		if err != nil {
			t.Fatal(err)
		}
		st, body := deploy(t, m, http.MethodPost, gust.FunctionSpec{Service: "talker", Namespace: "logs-a", Image: imageTag("misbehave")})
		if st != http.StatusAccepted {
			t.Fatalf("deploy in logs-a: %d %s", st, body)
		}
		if st, _, body := call(t, "GET", gw(m)+"/function/talker.logs-a/mine", ""); st != http.StatusOK {
			t.Fatalf("call in logs-a: %d %s", st, body)
		}
		keyA := gateway.NewClient(gw(m))
		keyA.Token = ka.Key
		// Its own namespace, named or not: its lines only.
		check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
			var got []gust.LogLine
			if err := keyA.Logs(ctx, gust.LogQuery{Name: "talker"}, "", func(l gust.LogLine) error { got = append(got, l); return nil }); err != nil {
				return err
			}
			if len(got) == 0 {
				return errors.New("no lines yet")
			}
			for _, l := range got {
				if l.Namespace != "logs-a" {
					return fmt.Errorf("the key of logs-a read a line of %s: %+v", l.Namespace, l)
				}
			}
			return nil
		})
		// Another namespace: refused.
		for _, ns := range []string{gust.DefaultNamespace, "logs-b"} {
			err := keyA.Logs(ctx, gust.LogQuery{Name: "talker", Namespace: ns}, "", func(gust.LogLine) error { return nil })
			if gust.ErrorCode(err) != gust.EFORBIDDEN {
				t.Errorf("the key of logs-a reading %s's logs: %v, want forbidden", ns, err)
			}
		}
	})
}

// TestFunctionLogs_Restart: the lines of a call are still there after
// `gust up` restarts, and `gust logs` prints them.
func TestFunctionLogs_Restart(t *testing.T) {
	dir := t.TempDir()
	m := MustRunUp(t, dir)
	mustDeploy(t, m, "keeplog", imageTag("misbehave"), nil)
	st, h, body := call(t, "GET", gw(m)+"/function/keeplog/before", "")
	if st != http.StatusOK {
		t.Fatalf("call: %d %s", st, body)
	}
	id := h.Get(gust.HeaderCallID)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := MustRunUp(t, dir)
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		if _, ok := lineOf(readLogs(t, m2, "keeplog", ""), "call "+id); !ok {
			return fmt.Errorf("no line of call %s after the restart", id)
		}
		return nil
	})
	code, out, errOut := gustCLI(t, gw(m2), "", "logs", "keeplog", "--since", "1h")
	if code != 0 {
		t.Fatalf("gust logs: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, " "+id+" call "+id+" attempt") {
		t.Errorf("gust logs printed %q, want the line of call %s tied to it", out, id)
	}
	code, out, errOut = gustCLI(t, gw(m2), "", "logs", "keeplog", "--json", "--tail", "1")
	if code != 0 {
		t.Fatalf("gust logs --json: exit %d: %s", code, errOut)
	}
	if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, `"name":"keeplog"`) {
		t.Errorf("gust logs --json --tail 1 printed %q, want one JSON line", out)
	}
	if code, _, errOut := gustCLI(t, gw(m2), "", "logs", "nosuchfn"); code != 1 || !strings.Contains(errOut, "nosuchfn") {
		t.Errorf("gust logs of an unknown function: exit %d %q, want 1 and a message naming it", code, errOut)
	}
}
