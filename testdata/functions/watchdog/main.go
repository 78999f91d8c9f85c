// Command watchdog is a test fixture that behaves, for Gust's tests, like
// the OpenFaaS classic watchdog (github.com/openfaas/classic-watchdog): it
// writes the health lock file /tmp/.lock at start and answers /_/health
// by it, and on every other call runs the command in $fprocess (split on
// spaces) with the request body on stdin and the Http_* environment
// variables the classic watchdog sets (handler.go getAdditionalEnvs:
// Http_<Header> with "-" as "_", Http_Method, Http_ContentLength,
// Http_Content_Length, Http_Transfer_Encoding, Http_Query, Http_Path,
// Http_Host), answering its standard output. It answers /redirect itself
// with a 302, which the caller must see unfollowed.
//
// Run as "/fn report", it is the fprocess of the tests: it prints as JSON
// its user, working directory, standard input, Http_* environment and
// whether /tmp is writable.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "report" {
		report()
		return
	}
	fprocess := os.Getenv("fprocess")
	if fprocess == "" {
		log.Fatal("fprocess is not set") // as the classic watchdog refuses to start
	}
	lock := filepath.Join(os.TempDir(), ".lock")
	if err := os.WriteFile(lock, nil, 0o660); err != nil {
		log.Fatalf("cannot write %s: %v", lock, err)
	}
	http.HandleFunc("/_/health", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(lock); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "OK")
	})
	http.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/elsewhere")
		w.WriteHeader(http.StatusFound)
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		args := strings.Fields(fprocess)
		cmd := exec.CommandContext(r.Context(), args[0], args[1:]...)
		cmd.Stdin = r.Body
		cmd.Env = append(os.Environ(), httpEnv(r)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "fprocess %q: %v: %s", fprocess, err, stderr.Bytes())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	log.Fatal(http.ListenAndServe(":"+port, nil))
}

// httpEnv is the classic watchdog's Http_* environment of request r.
func httpEnv(r *http.Request) []string {
	var env []string
	for k, v := range r.Header {
		env = append(env, "Http_"+strings.ReplaceAll(k, "-", "_")+"="+v[0])
	}
	env = append(env, "Http_Method="+r.Method,
		fmt.Sprintf("Http_ContentLength=%d", r.ContentLength),
		fmt.Sprintf("Http_Content_Length=%d", r.ContentLength))
	if len(r.TransferEncoding) > 0 {
		env = append(env, "Http_Transfer_Encoding="+r.TransferEncoding[0])
	}
	if r.URL.RawQuery != "" {
		env = append(env, "Http_Query="+r.URL.RawQuery)
	}
	if r.URL.Path != "" {
		env = append(env, "Http_Path="+r.URL.Path)
	}
	if r.Host != "" {
		env = append(env, "Http_Host="+r.Host)
	}
	return env
}

// Report is what "/fn report" prints.
type Report struct {
	UID, GID    int
	Dir         string
	Stdin       string
	Env         map[string]string
	TmpWritable bool
	TmpError    string `json:",omitempty"`
}

func report() {
	in, _ := io.ReadAll(os.Stdin)
	dir, _ := os.Getwd()
	rep := Report{UID: os.Getuid(), GID: os.Getgid(), Dir: dir, Stdin: string(in), Env: map[string]string{}}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "Http_") || k == "fprocess" {
			rep.Env[k] = v
		}
	}
	f := filepath.Join(os.TempDir(), fmt.Sprintf("report-%d", os.Getpid()))
	if err := os.WriteFile(f, in, 0o600); err != nil {
		rep.TmpError = err.Error()
	} else {
		rep.TmpWritable = true
		os.Remove(f)
	}
	json.NewEncoder(os.Stdout).Encode(rep)
}
