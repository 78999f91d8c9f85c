package main

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandle(t *testing.T) {
	r := httptest.NewRequest("POST", "/", strings.NewReader(`{"id":7}`))
	r.Header.Set("Ce-Id", "e1")
	r.Header.Set("Ce-Specversion", "1.0")
	r.Header.Set("Ce-Subject", "orders.created")
	w := httptest.NewRecorder()
	handle(w, r)
	var got receipt
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if got.Event != "e1" || got.Subject != "orders.created" || got.Bytes != 8 {
		t.Errorf("receipt %+v", got)
	}
	w = httptest.NewRecorder()
	handle(w, httptest.NewRequest("POST", "/", nil))
	if w.Code != 400 {
		t.Errorf("plain call: %d, want 400", w.Code)
	}
}
