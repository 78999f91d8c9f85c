package sdk_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

func ExampleRunFunc() {
	sdk.RunFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from call %s\n", sdk.CallID(r.Context()))
	})
}

// Wrap lets a test exercise a function without the network.
func ExampleWrap() {
	h := sdk.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, hasDeadline := sdk.Deadline(r.Context())
		fmt.Fprintf(w, "call %s, deadline %v", sdk.CallID(r.Context()), hasDeadline)
	}))

	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set(sdk.HeaderCallID, "c-1")
	r.Header.Set(sdk.HeaderDeadline, "2099-01-02T15:04:05.123456789Z")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Println(w.Body.String())
	// Output: call c-1, deadline true
}
