package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
)

// chromium returns the path of a Chromium (Debian's package is
// "chromium"). Without one the test skips, or fails on CI, which sets
// GUST_REQUIRE_DOCKER and installs it (.ci/run).
func chromium(tb testing.TB) string {
	tb.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found (install Debian's package: apt-get install -y chromium)"
	if os.Getenv("GUST_REQUIRE_DOCKER") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// TestUI_Browser drives the dashboard in headless Chromium against a real
// `gust up`: the browser meets the Basic challenge and answers it, the
// page deploys a function through its form, calls made to it show up as
// the function's instance, its invocation records and points of the
// charts, its logs follow live, and the page deletes it again; a dead
// letter shows and is redriven from the page. A
// screenshot of the page (GUST_UI_SCREENSHOT names where, else the
// test's temporary directory) must not be blank.
func TestUI_Browser(t *testing.T) {
	MustDocker(t) // first: in -short mode the test skips, Chromium or not
	exe := chromium(t)
	m := MustRunUp(t, "")
	base := gw(m)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1800))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	// The first Run starts the browser and must not carry a timeout
	// (it would end the browser); later steps are bounded by ctx.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 4*time.Minute)
	defer cancel()

	// The browser's side of the Basic challenge: Chromium asks, the
	// "user" gives the admin's credentials. Every other request goes on.
	// Script errors (a failed module, a CSP refusal of a script) fail
	// the test.
	var challenges atomic.Int32
	var mu sync.Mutex
	var jsErrors []string
	answer := func(f func() error) {
		go func() {
			if err := f(); err != nil && ctx.Err() == nil {
				t.Logf("answer the browser: %v", err)
			}
		}()
	}
	err := chromedp.Listen(bctx, func(ev any) {
		switch ev := ev.(type) {
		case *fetch.EventAuthRequired:
			challenges.Add(1)
			answer(func() error {
				_, err := chromedp.Call(bctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID,
					AuthChallengeResponse: &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials,
						Username: gateway.AdminUser, Password: testAdminPassword}})
				return err
			})
		case *fetch.EventRequestPaused:
			answer(func() error {
				_, err := chromedp.Call(bctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
				return err
			})
		case *runtime.EventExceptionThrown:
			mu.Lock()
			jsErrors = append(jsErrors, (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
			mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if string(ev.Type) == "error" {
				var b strings.Builder
				for _, a := range ev.Args {
					fmt.Fprintf(&b, "%s%s ", a.Value, a.Description)
				}
				mu.Lock()
				jsErrors = append(jsErrors, "console.error: "+b.String())
				mu.Unlock()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	fail := func(what string, err error) {
		t.Helper()
		html, _ := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("main")))
		t.Fatalf("%s: %v\npage: %.4000s", what, err, html)
	}
	must := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			fail(what, err)
		}
	}
	// waitJS polls a script until it is true.
	waitJS := func(what, script string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](script, chromedp.WithPollingTimeout(90*time.Second), chromedp.WithPollingInterval(250*time.Millisecond))); err != nil {
			fail(what, err)
		}
	}
	// jsClick clicks in the page's own turn: the tables are redrawn on
	// every refresh, so a node found in one protocol call may be gone by
	// the next.
	jsClick := func(what, sel string) {
		t.Helper()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const b = document.querySelector(%q); if (!b) return false; b.click(); return true; })()`, sel)))
		if err != nil || !ok {
			fail(what, fmt.Errorf("click %s: %v (found: %v)", sel, err, ok))
		}
	}
	enableAuth := func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, fetch.Enable, fetch.EnableParams{HandleAuthRequests: &[]bool{true}[0]})
		if err == nil {
			_, err = cdp.Call(ctx, tg, runtime.Enable, cdp.Empty{})
		}
		return chromedp.Void{}, err
	}

	must("load /ui/", enableAuth, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#functions")))
	if challenges.Load() == 0 {
		t.Errorf("the browser loaded /ui/ without a Basic challenge")
	}
	waitJS("first refresh", `Number(document.body.dataset.loaded) >= 1`)
	// The style sheet applied under the page's CSP.
	waitJS("style sheet", `getComputedStyle(document.body).marginTop === '0px'`)

	// Deploy through the page's form.
	const name = "uibrowser"
	must("deploy through the form",
		chromedp.SetValue(chromedp.CSS(`#deploy input[name=service]`), name),
		chromedp.SetValue(chromedp.CSS(`#deploy input[name=image]`), imageTag("misbehave")),
		chromedp.SetValue(chromedp.CSS(`#deploy textarea[name=labels]`), "team=ui"),
		chromedp.Click(chromedp.CSS(`#deploy button[type=submit]`)))
	waitJS("deploy result", `document.querySelector('#deploy-result').textContent.startsWith('Deployed')`)
	row := fmt.Sprintf(`#functions tr[data-function=%q]`, name)
	waitJS("function row", fmt.Sprintf(`!!document.querySelector(%q)`, row))

	// Follow its logs before calling it, so the lines arrive live.
	logs, logsBody := probeLogs(t, base, name)
	jsClick("follow logs", row+` td.row-actions button`)
	waitJS("log state", `document.querySelector('#logs-state').textContent !== ''`)

	var callIDs []string
	for i := 0; i < 5; i++ {
		st, h, body := call(t, http.MethodPost, base+"/function/"+name, "")
		if st != http.StatusOK {
			t.Fatalf("call %d: %d %s", i, st, body)
		}
		callIDs = append(callIDs, h.Get(gust.HeaderCallID))
	}
	last := callIDs[len(callIDs)-1]
	rec := waitRecord(t, base, last)
	if rec.Instance == "" {
		t.Fatalf("record %s has no instance", rec.CallID)
	}
	inst := rec.Instance[:min(12, len(rec.Instance))]

	// The page shows the function's instance, its invocation, and the
	// calls as points of the charts.
	waitJS("instance in the functions table", fmt.Sprintf(`document.querySelector(%q).textContent.includes(%q)`, row, inst))
	waitJS("ready pool", fmt.Sprintf(`document.querySelector(%q) !== null`, row+` .st-ready`))
	waitJS("invocation row", fmt.Sprintf(`!!document.querySelector('#invocations tr[data-call=%q]')`, rec.CallID))
	waitJS("calls chart", `Number(document.querySelector('#c-rate svg').dataset.points) > 0 && document.querySelectorAll('#c-rate svg rect').length > 0`)
	waitJS("latency chart", `Number(document.querySelector('#c-latency svg').dataset.points) > 0`)
	waitJS("calls counted", `Number(document.querySelector('#k-calls').textContent) >= 5`)
	// Billing: the function's row counts its calls, and its cost per hour
	// is a line with points.
	waitJS("billing row", fmt.Sprintf(`[...document.querySelectorAll('#billing tbody tr')].some((tr) => tr.cells[0].textContent === %q && Number(tr.cells[1].textContent) >= 5)`, name))
	waitJS("billing chart", fmt.Sprintf(`Number(document.querySelector('#c-bill-fn svg').dataset.points) > 0 && !!document.querySelector('#c-bill-fn g[data-series=%q] polyline')`, name))

	if logs == http.StatusOK {
		waitJS("a log line of the last call", fmt.Sprintf(`document.querySelector('#logs').textContent.includes(%q)`, "call "+last))
	} else {
		// Without the log route the panel says why instead of failing.
		t.Logf("GET /system/logs answered %d %.200s: checking that the page says so", logs, logsBody)
		waitJS("logs unavailable", `/No logs|unavailable/.test(document.querySelector('#logs-state').textContent)`)
	}

	if hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#error').hidden`)); err != nil || !hidden {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#error').textContent`))
		t.Errorf("the page shows an error: %v %s", err, text)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := os.Getenv("GUST_UI_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "dashboard.png")
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	checkNotBlank(t, shot)
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))

	// Delete through the page: the button asks for a second click.
	jsClick("delete", row+` button.danger`)
	waitJS("delete armed", fmt.Sprintf(`document.querySelector(%q).dataset.armed === 'yes'`, row+` button.danger`))
	jsClick("confirm delete", row+` button.danger`)
	waitJS("row gone", fmt.Sprintf(`!document.querySelector(%q)`, row))
	if st, _, body := call(t, http.MethodGet, base+"/system/function/"+name, ""); st != http.StatusNotFound {
		t.Errorf("after the page's delete: GET /system/function/%s answered %d %s, want 404", name, st, body)
	}
	// A dead letter, redriven from the page: an async call of a function
	// that answers 500 and is tried once.
	const dead = "uideadletter"
	mustDeploy(t, m, dead, imageTag("misbehave"), map[string]string{"gust.retry.max-attempts": "1"})
	st, h, body := call(t, http.MethodPost, base+"/async-function/"+dead+"?status=500", "")
	if st != http.StatusAccepted {
		t.Fatalf("async call: %d %s", st, body)
	}
	dlRow := fmt.Sprintf(`#deadletters tr[data-call=%q]`, h.Get(gust.HeaderCallID))
	waitJS("dead letter row", fmt.Sprintf(`!!document.querySelector(%q)`, dlRow))
	jsClick("redrive", dlRow+` button`)
	waitJS("redriven", fmt.Sprintf(`(() => { const r = document.querySelector(%q); return !r || r.textContent.includes('Queued'); })()`, dlRow))
	// The redriven call fails again and comes back as a dead letter of
	// its second attempt.
	waitJS("dead letter of the second attempt", fmt.Sprintf(`(() => { const r = document.querySelector(%q); return !!r && r.cells[3].textContent === '2'; })()`, dlRow))

	mu.Lock()
	defer mu.Unlock()
	if len(jsErrors) > 0 {
		t.Errorf("script errors on the page:\n%s", strings.Join(jsErrors, "\n"))
	}
}

// probeLogs asks the gateway for a function's logs once, to learn whether
// it serves them (the log route came with issue 12, point 1).
func probeLogs(tb testing.TB, base, name string) (int, string) {
	tb.Helper()
	st, _, body := call(tb, http.MethodGet, base+"/system/logs?name="+name+"&tail=1", "")
	return st, body
}

// waitRecord waits for the billing record of a call.
func waitRecord(tb testing.TB, base, callID string) gust.CallRecord {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _, body := call(tb, http.MethodGet, base+"/system/invocations/"+callID, "")
		if st == http.StatusOK {
			var rec gust.CallRecord
			if err := json.Unmarshal([]byte(body), &rec); err != nil {
				tb.Fatal(err)
			}
			return rec
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no record of call %s: %d %s", callID, st, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkNotBlank fails unless the PNG has many colours: a page that did
// not render is one colour, or a handful.
func checkNotBlank(tb testing.TB, shot []byte) {
	tb.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		tb.Fatalf("screenshot: %v", err)
	}
	b := img.Bounds()
	colours := map[uint32]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[(r>>8)<<16|(g>>8)<<8|bl>>8] = true
		}
	}
	if b.Dx() < 800 || b.Dy() < 600 || len(colours) < 16 {
		tb.Fatalf("screenshot is blank: %dx%d with %d colours", b.Dx(), b.Dy(), len(colours))
	}
}
