// Command echo is a Gust function that describes the request it got. It
// answers 200 with Content-Type application/json and the object
//
//	{"method": ..., "path": ..., "query": raw query, "headers": {name: first value},
//	 "body": body as a string, "callId": the X-Call-Id the platform sent}
//
// Header names are in canonical form ("Content-Type").
//
// Build and deploy it with:
//
//	gust build examples/echo --tag echo:latest
//	gust deploy --name echo --image echo:latest
package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

// maxBody bounds the body echo reads and sends back.
const maxBody = 10 << 20

func main() {
	sdk.RunFunc(echo)
}

// reply is what echo answers.
type reply struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	CallID  string            `json:"callId"`
}

// echo answers a JSON description of the request.
func echo(w http.ResponseWriter, r *http.Request) {
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
	headers := make(map[string]string, len(r.Header))
	for name, values := range r.Header {
		if len(values) > 0 {
			headers[name] = values[0]
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(reply{
		Method:  r.Method,
		Path:    r.URL.Path,
		Query:   r.URL.RawQuery,
		Headers: headers,
		Body:    string(body),
		CallID:  sdk.CallID(r.Context()),
	})
}
