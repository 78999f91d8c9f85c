package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// Function logs: GET /system/logs answers the lines kept of a function's
// instances as newline-delimited JSON, one OpenFaaS log message
// (faas-provider logs.Message) per line, as `faas-cli logs` reads them.
// Query: name (required), namespace (default openfaas-fn), instance,
// since (an RFC 3339 time, or a duration back from now such as 10m),
// tail (the last N lines; 0 or less: all), follow (keep the answer open
// and stream new lines until the client leaves).

// MaxLogTail bounds tail: a tail is held in memory while the lines before
// it are read.
const MaxLogTail = 10_000

// logService is the gateway's access to the kept lines.
type logService struct {
	reader gust.LogReader
	// ctx ends when the server shuts down, ending the followers, which
	// would otherwise hold the shutdown until its deadline.
	ctx    context.Context
	cancel context.CancelFunc
}

// WithLogs serves GET /system/logs from r. Without it the route answers
// 503. Call it before Open.
func (s *Server) WithLogs(r gust.LogReader) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s.logs = &logService{reader: r, ctx: ctx, cancel: cancel}
	s.srv.RegisterOnShutdown(cancel)
	return s
}

// parseLogQuery reads a log query from the query string of GET
// /system/logs; a bad parameter is an EINVALID error naming it.
func parseLogQuery(v url.Values, now time.Time) (gust.LogQuery, error) {
	q := gust.LogQuery{Name: v.Get("name"), Namespace: v.Get("namespace"), Instance: v.Get("instance")}
	if q.Name == "" {
		return q, gust.Invalidf("name", "name is required: the function whose logs to read")
	}
	if !gust.ValidName(q.Name) {
		return q, gust.Invalidf("name", "function name %q is not a valid name", q.Name)
	}
	if q.Namespace == "" {
		q.Namespace = gust.DefaultNamespace
	} else if !gust.ValidName(q.Namespace) {
		return q, gust.Invalidf("namespace", "namespace %q is not a valid name", q.Namespace)
	}
	if len(q.Instance) > 128 {
		return q, gust.Invalidf("instance", "instance is over 128 characters")
	}
	if s := v.Get("since"); s != "" {
		since, err := parseSince(s, now)
		if err != nil {
			return q, err
		}
		q.Since = since
	}
	if s := v.Get("tail"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return q, gust.Invalidf("tail", "tail %q is not a whole number of lines", s)
		}
		if n > MaxLogTail {
			return q, gust.Invalidf("tail", "tail %d is over %d lines", n, MaxLogTail)
		}
		q.Tail = max(n, 0) // OpenFaaS: 0 or less is every line
	}
	if s := v.Get("follow"); s != "" {
		f, err := strconv.ParseBool(s)
		if err != nil {
			return q, gust.Invalidf("follow", "follow %q is not true or false", s)
		}
		q.Follow = f
	}
	return q, nil
}

// parseSince reads since: an RFC 3339 time (faas-cli sends one), or a
// duration back from now ("10m", "1h30m").
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, gust.Invalidf("since", "since %q is neither an RFC 3339 time (2006-01-02T15:04:05Z) nor a duration (10m)", s)
}

// functionLogs serves GET /system/logs.
func (s *Server) functionLogs(w http.ResponseWriter, r *http.Request) error {
	q, err := parseLogQuery(r.URL.Query(), time.Now())
	if err != nil {
		return err
	}
	if s.logs == nil {
		return gust.Errorf(gust.EUNAVAILABLE, "this gateway keeps no function logs")
	}
	// Logs of a function that does not exist (or no longer does) are a
	// 404, as OpenFaaS answers.
	if _, err := s.lookup(r.Context(), q.Namespace, q.Name); err != nil {
		return err
	}
	ctx := r.Context()
	if q.Follow {
		// Streams until the client leaves or the server shuts down,
		// past the server's write timeout.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(s.logs.ctx, cancel)()
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Time{})
		_ = rc.SetReadDeadline(time.Time{})
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if q.Follow {
		_ = rc.Flush() // the client sees the answer begin before any line
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	enc := json.NewEncoder(bw)
	err = s.logs.reader.ReadLogs(ctx, q, func(line *gust.LogLine) error {
		if err := enc.Encode(line); err != nil {
			return err
		}
		if q.Follow {
			if err := bw.Flush(); err != nil {
				return err
			}
			return rc.Flush()
		}
		return nil
	})
	if ferr := bw.Flush(); err == nil && ferr != nil && ctx.Err() == nil {
		err = ferr
	}
	if err != nil && ctx.Err() == nil {
		// The status is sent: the client sees the answer end early.
		s.logger.Warn("function logs", zap.String("function", gust.FunctionKey(q.Namespace, q.Name)), zap.Error(err))
	}
	return nil
}

// Logs reads the lines kept of function q.Namespace/q.Name (GET
// /system/logs) and calls fn on each, oldest first; with q.Follow it
// goes on with new lines until ctx ends (then it returns nil). since is
// q.Since, or, when sinceText is set, that text as the gateway reads it
// (an RFC 3339 time or a duration back from now).
func (c *Client) Logs(ctx context.Context, q gust.LogQuery, sinceText string, fn func(gust.LogLine) error) error {
	v := url.Values{"name": {q.Name}}
	if q.Namespace != "" {
		v.Set("namespace", q.Namespace)
	}
	if q.Instance != "" {
		v.Set("instance", q.Instance)
	}
	switch {
	case sinceText != "":
		v.Set("since", sinceText)
	case !q.Since.IsZero():
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if q.Tail > 0 {
		v.Set("tail", strconv.Itoa(q.Tail))
	}
	v.Set("follow", strconv.FormatBool(q.Follow))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/system/logs?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return ResponseError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 8*gust.MaxLogLine+64<<10)
	for sc.Scan() {
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		var line gust.LogLine
		if err := json.Unmarshal(b, &line); err != nil {
			return fmt.Errorf("decode log line: %w", err)
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read logs: %w", err)
	}
	return nil
}
