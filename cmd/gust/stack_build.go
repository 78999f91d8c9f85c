package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gustfaas/gust/internal/fnbuild"
)

// buildStack builds the functions of the stack file (the one filter
// names, or all) with fnbuild, one after the other: each handler folder
// into its image. Progress goes to progress: on a terminal one line per
// function, redrawn as the build moves (compile, image steps); otherwise
// plain lines, each prefixed with the function's name.
func buildStack(ctx context.Context, file, filter string, progress io.Writer, tty bool) error {
	s, err := ReadStack(file)
	if err != nil {
		return err
	}
	names, err := s.Selected(file, filter)
	if err != nil {
		return err
	}
	for _, name := range names {
		fn := s.Functions[name]
		if fn.SkipBuild {
			fmt.Fprintf(progress, "%s: skip_build is set, not built\n", name)
			continue
		}
		if !buildLangs[fn.Lang] {
			return stackError(file, "functions."+name+".lang", "%q: gust build compiles go and http functions; build this image with its own tooling and set skip_build: true", fn.Lang)
		}
		if fn.Handler == "" {
			return stackError(file, "functions."+name+".handler", "missing")
		}
	}
	var rt interface {
		fnbuild.ImageBuilder
		Close() error
	}
	for _, name := range names {
		fn := s.Functions[name]
		if fn.SkipBuild {
			continue
		}
		if rt == nil {
			if rt, err = openRuntimeForBuild(ctx); err != nil {
				return err
			}
			defer rt.Close()
		}
		dir := fn.HandlerDir(file)
		if err := writeSDK(dir); err != nil {
			return err
		}
		p := newBuildProgress(progress, name, tty)
		err := fnbuild.Build(ctx, rt, dir, fn.Image, p)
		p.done(err)
		if err != nil {
			return fmt.Errorf("build %s: %w", name, err)
		}
		fmt.Printf("built %s\n", fn.Image)
	}
	return nil
}

// isTerminal reports whether f is a terminal that can redraw a line.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// buildProgress is the progress writer of one function's build: fnbuild
// writes its own lines (compiling, compiled, building image) and then the
// engine's (Step 1/6 : FROM scratch, ...).
type buildProgress struct {
	out   io.Writer
	name  string
	tty   bool
	start time.Time

	mu      sync.Mutex
	partial string // a line not yet ended
	status  string // the latest step, on a terminal
	stop    chan struct{}
	stopped chan struct{}
}

func newBuildProgress(out io.Writer, name string, tty bool) *buildProgress {
	p := &buildProgress{out: out, name: name, tty: tty, start: time.Now(), status: "starting"}
	if tty {
		// The clock ticks while the compiler runs, which prints nothing.
		p.stop, p.stopped = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(p.stopped)
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-t.C:
					p.mu.Lock()
					p.drawLocked()
					p.mu.Unlock()
				}
			}
		}()
	}
	return p
}

// Write takes whole or partial lines.
func (p *buildProgress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.partial + string(b)
	lines := strings.Split(s, "\n")
	p.partial = lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		p.lineLocked(l)
	}
	return len(b), nil
}

func (p *buildProgress) lineLocked(l string) {
	l = strings.TrimSpace(l)
	if l == "" {
		return
	}
	if !p.tty {
		fmt.Fprintf(p.out, "%s: %s\n", p.name, l)
		return
	}
	// The engine's " ---> 1a2b3c" and "Running in" lines say nothing a
	// reader wants on the one line; steps and fnbuild's lines do.
	if strings.HasPrefix(l, "--->") || strings.HasPrefix(l, "Removing intermediate") {
		return
	}
	if strings.HasPrefix(l, "Step ") {
		l = "image layer " + strings.TrimPrefix(l, "Step ")
	}
	p.status = l
	p.drawLocked()
}

// drawLocked redraws the function's line: name, step, time so far.
func (p *buildProgress) drawLocked() {
	status := p.status
	if len(status) > 60 {
		status = status[:57] + "..."
	}
	fmt.Fprintf(p.out, "\r\033[K%s  %s  %.1fs", p.name, status, time.Since(p.start).Seconds())
}

// done ends the function's progress: on a terminal its line becomes the
// outcome.
func (p *buildProgress) done(err error) {
	if p.tty {
		close(p.stop)
		<-p.stopped
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.partial != "" {
		p.lineLocked(p.partial)
		p.partial = ""
	}
	took := time.Since(p.start).Round(100 * time.Millisecond)
	switch {
	case !p.tty:
		if err == nil {
			fmt.Fprintf(p.out, "%s: done in %s\n", p.name, took)
		}
	case err != nil:
		fmt.Fprintf(p.out, "\r\033[K%s  failed after %s\n", p.name, took)
	default:
		fmt.Fprintf(p.out, "\r\033[K%s  done in %s\n", p.name, took)
	}
}
