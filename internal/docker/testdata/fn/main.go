// Command fn is the function the internal/docker tests run: it serves
// /_/health, answers / with its hostname, and exits with code 3 on /?exit=1.
// With FN_EXIT_AT_START=N in its environment it exits with code N at once
// (the conformance suite's crashing container). /?file=PATH answers the
// content of the file PATH (404 and the error when it cannot be read), and
// /?write=PATH writes the file PATH (204, or 409 and the error): the
// conformance suite's secrets check. /?id=1 answers "UID:GID" of the
// process and /?caps=1 its effective capabilities (CapEff of
// /proc/self/status, hex): the sandbox checks. /?dial=HOST:PORT opens a TCP
// connection from inside the container and answers "ok" (200) or the error
// (502): the network isolation checks. /?peer=1 answers the address the
// request came from.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
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
		q := r.URL.Query()
		if q.Get("exit") == "1" {
			fmt.Println("fn: exiting with code 3")
			os.Exit(3)
		}
		if q.Get("id") == "1" {
			fmt.Fprintf(w, "%d:%d", os.Getuid(), os.Getgid())
			return
		}
		if q.Get("caps") == "1" {
			b, err := os.ReadFile("/proc/self/status")
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
					fmt.Fprint(w, strings.TrimSpace(v))
					return
				}
			}
			http.Error(w, "no CapEff in /proc/self/status", http.StatusNotFound)
			return
		}
		if q.Get("peer") == "1" {
			fmt.Fprint(w, r.RemoteAddr)
			return
		}
		if q.Has("dial") {
			c, err := net.DialTimeout("tcp", q.Get("dial"), 2*time.Second)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			c.Close()
			fmt.Fprint(w, "ok")
			return
		}
		if q.Has("file") {
			b, err := os.ReadFile(q.Get("file"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			w.Write(b)
			return
		}
		if q.Has("write") {
			if err := os.WriteFile(q.Get("write"), []byte("written by fn"), 0o600); err != nil {
				http.Error(w, err.Error(), http.StatusConflict)
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		fmt.Fprintln(w, host)
	})
	fmt.Fprintln(os.Stderr, "fn: starting")
	fmt.Println("fn: listening on :" + port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
