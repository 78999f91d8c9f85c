package gust

import (
	"context"
	"time"
)

// LogLine is one line an instance of a function wrote on its stdout or
// stderr. Its JSON is OpenFaaS's log message (faas-provider logs.Message:
// name, namespace, instance, timestamp, text), which `faas-cli logs`
// reads, with Gust's call id and stream added.
type LogLine struct {
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Instance  string    `json:"instance"`
	Timestamp time.Time `json:"timestamp"`
	Text      string    `json:"text"`
	// Stream is "stdout" or "stderr".
	Stream string `json:"stream,omitempty"`
	// CallID is the call the line was written during, when exactly one
	// call of its instance ran then; "" when none or several did.
	CallID string `json:"callId,omitempty"`
}

// MaxLogLine bounds the text of one LogLine in bytes: a longer line is
// cut there (and ends with "…").
const MaxLogLine = 16 << 10

// LogSink takes the lines a worker collects. AddLog does not wait for a
// store: a sink that cannot keep up drops lines rather than slow the
// instance's collector.
type LogSink interface {
	AddLog(line *LogLine)
}

// LogQuery selects kept lines: those of one function (Namespace, Name),
// optionally of one Instance, written at Since or later (zero: all), the
// last Tail of them (0: all). Follow keeps the query open for new lines.
type LogQuery struct {
	Namespace, Name string
	Instance        string
	Since           time.Time
	Tail            int
	Follow          bool
}

// LogReader serves the lines kept. ReadLogs calls fn for each line the
// query selects, oldest first; with Follow it then waits for new ones
// until ctx ends (and returns nil). An error of fn ends it with that error.
type LogReader interface {
	ReadLogs(ctx context.Context, q LogQuery, fn func(*LogLine) error) error
}

// LogFollower is an optional Runtime ability: the output of a container,
// line by line, as it is written. FollowLogs calls fn for each line the
// container wrote at since or later (zero: from its start), on the
// caller's goroutine, until the container stops (then it returns nil,
// having delivered the last line) or ctx ends. stream is "stdout" or
// "stderr"; ts is when the runtime received the line. Lines are cut at
// MaxLogLine bytes.
type LogFollower interface {
	FollowLogs(ctx context.Context, id string, since time.Time, fn func(stream string, ts time.Time, text string)) error
}
