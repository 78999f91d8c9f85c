package docker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/gustfaas/gust"
)

var _ gust.LogFollower = (*Runtime)(nil)

// FollowLogs implements gust.LogFollower on the Engine's log stream
// (GET /containers/{id}/logs?follow=1&timestamps=1). The stream ends
// when the container stops; a container that runs again (a restart) is
// followed on from the last line's time, so that no line is read twice.
// A stream that breaks (the Engine restarting) is opened again the same
// way, for about 30 s.
func (r *Runtime) FollowLogs(ctx context.Context, id string, since time.Time, fn func(stream string, ts time.Time, text string)) error {
	last, skip := since, time.Time{}
	failures := 0
	for {
		err := r.followOnce(ctx, id, last, func(stream string, ts time.Time, text string) {
			// A stream opened again starts at the last line's time, which
			// the Engine includes: what comes up to that time was
			// delivered already (lines of one write share their time,
			// so only a reopened stream skips).
			if !skip.IsZero() {
				if !ts.After(skip) {
					return
				}
				skip = time.Time{}
			}
			last = ts
			fn(stream, ts, text)
		})
		skip = last
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, gust.ErrInstanceNotFound) {
				return err
			}
			// The Engine restarting, or a broken connection: try again
			// for a while (the lines wait in the container's log file).
			if failures++; failures > followRetries {
				return err
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(min(time.Duration(failures)*200*time.Millisecond, 2*time.Second)):
			}
			continue
		}
		// The stream ended: the container stopped. Follow it on only if
		// it runs again.
		ictx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		info, ierr := r.client.ContainerInspect(ictx, id)
		cancel()
		if ierr != nil || info.State == nil || !info.State.Running && !info.State.Restarting {
			return nil
		}
		if info.State.Restarting {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
		}
		failures = 0
	}
}

// followRetries bounds the attempts to open a broken log stream again in
// a row: about 30 s in all.
const followRetries = 20

// followOnce reads one log stream of the container until it ends.
func (r *Runtime) followOnce(ctx context.Context, id string, since time.Time, fn func(stream string, ts time.Time, text string)) error {
	opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true, Timestamps: true}
	if !since.IsZero() {
		opts.Since = strconv.FormatInt(since.Unix(), 10) + "." + fmt.Sprintf("%09d", since.Nanosecond())
	}
	// Not bounded by CallTimeout: the stream lasts as long as the
	// container; ctx ends it.
	rc, err := r.client.ContainerLogs(ctx, id, opts)
	if err != nil {
		return instanceErr("container logs", err)
	}
	defer rc.Close()
	return demuxLines(rc, gust.MaxLogLine, fn)
}

// demuxLines splits the Engine's multiplexed log stream (frames of an
// 8-byte header, stream type in byte 0 and payload size big-endian in
// bytes 4-7; every frame starts with the RFC 3339 time the Engine got
// it) into lines of each stream. A line the Engine cut into several
// frames (it does past 16 KiB) is joined again, up to maxLine bytes; the
// rest of a longer line is dropped and the text ends with "…". A
// container with a TTY (no frames) is not something Gust starts.
func demuxLines(rd io.Reader, maxLine int, fn func(stream string, ts time.Time, text string)) error {
	type partial struct {
		buf       []byte
		ts        time.Time
		truncated bool
	}
	var parts [3]partial // by stream type: 1 stdout, 2 stderr
	names := [3]string{"stdout", "stdout", "stderr"}
	emit := func(k int) {
		p := &parts[k]
		text := string(p.buf)
		if p.truncated {
			text += "…"
		}
		fn(names[k], p.ts, text)
		p.buf, p.truncated, p.ts = p.buf[:0], false, time.Time{}
	}
	var hdr [8]byte
	var frame []byte
	for {
		if _, err := io.ReadFull(rd, hdr[:]); err != nil {
			for k := range parts {
				if len(parts[k].buf) > 0 || parts[k].truncated {
					emit(k)
				}
			}
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("read log stream: %w", err)
		}
		k := int(hdr[0])
		if k != 1 && k != 2 {
			k = 1 // stdin (0) or unknown: shown as stdout
		}
		size := int(binary.BigEndian.Uint32(hdr[4:]))
		// A frame is at most one line of the Engine's (16 KiB) plus its
		// time; more is read in pieces and cut.
		keep := min(size, 64<<10)
		if cap(frame) < keep {
			frame = make([]byte, keep)
		}
		frame = frame[:keep]
		if _, err := io.ReadFull(rd, frame); err != nil {
			return fmt.Errorf("read log stream: %w", err)
		}
		if size > keep {
			if _, err := io.CopyN(io.Discard, rd, int64(size-keep)); err != nil {
				return fmt.Errorf("read log stream: %w", err)
			}
		}
		ts, rest := splitTimestamp(frame)
		p := &parts[k]
		for len(rest) > 0 {
			if p.ts.IsZero() {
				p.ts = ts
			}
			i := bytes.IndexByte(rest, '\n')
			chunk := rest
			if i >= 0 {
				chunk = rest[:i]
			}
			if room := maxLine - len(p.buf); len(chunk) > room {
				chunk = chunk[:max(room, 0)]
				p.truncated = true
			}
			p.buf = append(p.buf, chunk...)
			if i < 0 {
				break
			}
			emit(k)
			rest = rest[i+1:]
		}
	}
}

// splitTimestamp splits the Engine's "2006-01-02T15:04:05.999999999Z "
// prefix off a frame. A frame without one keeps its bytes and gets the
// time it is read.
func splitTimestamp(b []byte) (time.Time, []byte) {
	if i := bytes.IndexByte(b, ' '); i > 0 && i <= 40 {
		if ts, err := time.Parse(time.RFC3339Nano, string(b[:i])); err == nil {
			return ts, b[i+1:]
		}
	}
	return time.Now(), b
}
