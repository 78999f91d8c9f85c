// Command gust is the Gust Function-as-a-Service platform: `gust up` runs
// every role in one process; `gust nats|gateway|scheduler|worker` run one
// role each; the other verbs are the client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Command is one verb of the gust CLI.
type Command struct {
	Name  string // the verb
	Usage string // arguments after the verb
	Short string // one line for the command list
	Long  string // the rest of `gust help VERB`
	// Flags registers the verb's flags and returns the function that runs
	// it with the remaining arguments.
	Flags func(fs *flag.FlagSet) func(ctx context.Context, args []string) error
}

// usageError is a mistake in how a command was called: print usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

var commands []*Command

func init() {
	commands = []*Command{
		upCommand, natsCommand, gatewayCommand, schedulerCommand, workerCommand,
		newCommand, buildCommand, deployCommand, invokeCommand, listCommand, describeCommand,
		rmCommand, scaleCommand, billingCommand, invocationsCommand, publishCommand, deadlettersCommand,
		loginCommand, namespaceCommand, keysCommand, secretCommand, versionCommand,
		workersCommand, logsCommand,
	}
}

// version is set at link time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the CLI and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1 {
		printUsage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "help" {
		args = []string{args[1], "--help"}
	}
	args = workerSubcommand(args)
	var cmd *Command
	for _, c := range commands {
		if c.Name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "gust: unknown command %q\nRun 'gust help' for the list of commands.\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("gust "+cmd.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	runFn := cmd.Flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gust %s %s\n\n%s\n", cmd.Name, cmd.Usage, cmd.Short)
		if cmd.Long != "" {
			fmt.Fprintf(stderr, "\n%s\n", strings.TrimSpace(cmd.Long))
		}
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(interleave(fs, args[1:])); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := runFn(ctx, fs.Args()); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "gust %s: %s\n", cmd.Name, ue.msg)
			fs.Usage()
			return 2
		}
		fmt.Fprintf(stderr, "gust %s: %s\n", cmd.Name, describeError(err))
		return 1
	}
	return 0
}

// interleave moves flags found after positional arguments to the front,
// so `gust invoke hello --data x` works as well as `gust invoke --data x
// hello`.
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 < len(args) {
					flags = append(flags, args[i+1])
					i++
				}
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `Gust runs functions in warm Docker containers, scales them to zero and
meters every call.

Usage: gust <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.Name, c.Short)
	}
	fmt.Fprint(w, `
Run 'gust help <command>' or 'gust <command> --help' for details.
`)
}

var versionCommand = &Command{
	Name:  "version",
	Short: "print the version",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error {
			fmt.Println("gust", version)
			return nil
		}
	},
}

// envOr returns the environment variable or def.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
