package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

func TestEcho(t *testing.T) {
	h := sdk.Wrap(http.HandlerFunc(echo))
	r := httptest.NewRequest(http.MethodPut, "/things/7?a=1&b=two&a=3", strings.NewReader(`{"x":1}`))
	r.Header.Set("Content-Type", "text/plain")
	r.Header.Add("X-Multi", "first")
	r.Header.Add("X-Multi", "second")
	r.Header.Set(sdk.HeaderCallID, "call-9")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)

	if got, want := w.Code, http.StatusOK; got != want {
		t.Fatalf("status=%d, want %d", got, want)
	}
	if got, want := w.Header().Get("Content-Type"), "application/json"; got != want {
		t.Fatalf("Content-Type=%q, want %q", got, want)
	}
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("decode %q: %v", w.Body.String(), err)
	}
	want := map[string]any{
		"method": "PUT",
		"path":   "/things/7",
		"query":  "a=1&b=two&a=3",
		"headers": map[string]any{
			"Content-Type": "text/plain",
			"X-Multi":      "first",
			"X-Call-Id":    "call-9",
		},
		"body":   `{"x":1}`,
		"callId": "call-9",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}

func TestEcho_NoCallID(t *testing.T) {
	w := httptest.NewRecorder()
	echo(w, httptest.NewRequest(http.MethodGet, "/", nil))
	var got reply
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.CallID != "" || got.Body != "" || got.Method != "GET" || got.Path != "/" {
		t.Fatalf("got %+v", got)
	}
}
