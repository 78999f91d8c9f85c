// Command hello is the smallest Gust function: it answers 200
// "Hello, NAME!\n", where NAME is the request body with surrounding space
// trimmed, or "world" when the body is empty.
//
// Build and deploy it with:
//
//	gust build examples/hello --tag hello:latest
//	gust deploy --name hello --image hello:latest
package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

// maxBody bounds the name a caller may send.
const maxBody = 1 << 20

func main() {
	sdk.RunFunc(hello)
}

// hello greets the name in the request body.
func hello(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	name := strings.TrimSpace(string(body))
	if name == "" {
		name = "world"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Hello, %s!\n", name)
}
