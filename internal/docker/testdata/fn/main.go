// Command fn is the function the internal/docker tests run: it serves
// /_/health, answers / with its hostname, and exits with code 3 on /?exit=1.
// With FN_EXIT_AT_START=N in its environment it exits with code N at once
// (the conformance suite's crashing container).
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if v := os.Getenv("FN_EXIT_AT_START"); v != "" {
		code, _ := strconv.Atoi(v)
		fmt.Println("fn: exiting at start with code " + v)
		os.Exit(code)
	}
	host, _ := os.Hostname()
	http.HandleFunc("/_/health", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("exit") == "1" {
			fmt.Println("fn: exiting with code 3")
			os.Exit(3)
		}
		fmt.Fprintln(w, host)
	})
	fmt.Fprintln(os.Stderr, "fn: starting")
	fmt.Println("fn: listening on :" + port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
