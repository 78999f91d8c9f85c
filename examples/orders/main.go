// Command orders is an event-triggered Gust function: deployed with the
// annotation topic=orders.>, it runs once for every message published on a
// matching NATS subject, delivered as a CloudEvent (binary mode). It
// answers with a receipt, which is the reply when the message was a NATS
// request.
//
//	gust build examples/orders --tag orders:latest
//	gust deploy --name orders --image orders:latest --annotation topic='orders.>'
//	gust publish orders.created '{"id": 7}'
//	gust publish --request orders.created '{"id": 8}'
package main

import (
	"encoding/json"
	"io"
	"net/http"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

func main() { sdk.RunFunc(handle) }

// receipt is what orders answers.
type receipt struct {
	Event   string `json:"event"`
	Subject string `json:"subject"`
	Bytes   int    `json:"bytes"`
	CallID  string `json:"callId"`
}

func handle(w http.ResponseWriter, r *http.Request) {
	ev, ok := sdk.Event(r)
	if !ok {
		http.Error(w, "orders is triggered by NATS events; publish on orders.*", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(receipt{Event: ev.ID, Subject: ev.Subject, Bytes: len(body), CallID: sdk.CallID(r.Context())})
}
