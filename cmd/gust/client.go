package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/fnbuild"
)

// describeError renders an error for the terminal: a gateway's message and
// the field it names, or the error as is.
func describeError(err error) string {
	var ge *gust.Error
	if errors.As(err, &ge) {
		switch {
		case ge.Field != "":
			return ge.Message + " (field " + ge.Field + ")"
		case ge.Code == gust.EUNAUTHORIZED:
			return ge.Message + " (run 'gust login', or set $GUST_PASSWORD or $GUST_KEY)"
		}
		return ge.Message
	}
	return err.Error()
}

// clientFlags are the flags every client verb takes.
type clientFlags struct {
	gateway   string
	namespace string
	creds     credentials
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	c.registerAuth(fs)
	fs.StringVar(&c.namespace, "namespace", "", "namespace (default "+gust.DefaultNamespace+")")
}

// registerAuth registers the gateway and credential flags.
func (c *clientFlags) registerAuth(fs *flag.FlagSet) {
	fs.StringVar(&c.gateway, "gateway", "", "gateway URL (default $GUST_GATEWAY, else the one of 'gust login', else "+defaultGateway+")")
	fs.StringVar(&c.creds.Password, "password", "", "admin password (default $GUST_PASSWORD, 'gust login', or the one 'gust up' generated on this machine); visible to other local users in the process list: prefer those")
	fs.StringVar(&c.creds.Key, "key", "", "a namespace's key (default $GUST_KEY or 'gust login'); visible in the process list like --password")
}

// client is a client of the gateway in use with the credentials found for
// it (see credentials.go). An unreadable user config is reported and
// skipped: the flags and the environment still work.
func (c *clientFlags) client() *gateway.Client {
	cfg, _, err := readUserConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gust: warning: %v (ignored)\n", err)
	}
	gw := resolveGateway(c.gateway, cfg)
	return newClient(gw, resolveCredentials(c.creds, gw, cfg))
}

// kvFlag collects repeated K=V flags.
type kvFlag map[string]string

func (k kvFlag) String() string { return "" }
func (k kvFlag) Set(s string) error {
	key, val, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	k[key] = val
	return nil
}

// listFlag collects a repeated flag's values in order.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	if s == "" {
		return fmt.Errorf("want a value")
	}
	*l = append(*l, s)
	return nil
}

var buildCommand = &Command{
	Name:  "build",
	Usage: "DIR --tag IMAGE | -f stack.yml [--filter NAME]",
	Short: "build a Go function folder, or the functions of a stack file, into FROM scratch images",
	Long: `Compiles the Go main package in DIR (CGO_ENABLED=0) and builds a
FROM scratch image holding it, through the Docker Engine API: no registry
and no docker CLI needed. With -f, builds every function of a stack file
(see 'gust new'): each handler folder into its image.`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		tag := fs.String("tag", "", "image name and tag, e.g. hello:latest (required)")
		file := fs.String("f", "", "stack file: build its functions")
		filter := fs.String("filter", "", "with -f: build only this function")
		return func(ctx context.Context, args []string) error {
			if err := stackOnlyFlags(*file, *filter); err != nil {
				return err
			}
			if *file != "" {
				if len(args) > 0 || *tag != "" {
					return usagef("-f takes no DIR and no --tag: the stack file names them")
				}
				return buildStack(ctx, *file, *filter, os.Stderr, isTerminal(os.Stderr))
			}
			if len(args) != 1 {
				return usagef("want exactly one DIR")
			}
			if *tag == "" {
				return usagef("--tag is required")
			}
			rt, err := openRuntimeForBuild(ctx)
			if err != nil {
				return err
			}
			defer rt.Close()
			if err := fnbuild.Build(ctx, rt, args[0], *tag, os.Stderr); err != nil {
				return err
			}
			fmt.Printf("built %s\n", *tag)
			return nil
		}
	},
}

var deployCommand = &Command{
	Name:  "deploy",
	Usage: "--name NAME --image IMAGE [--env K=V]... [--label K=V]... [--secret NAME]... [--memory 128Mi] | -f stack.yml [--filter NAME]",
	Short: "deploy (or redeploy) a function, or the functions of a stack file",
	Long: `Scaling labels (see README): com.openfaas.scale.min, com.openfaas.scale.max,
gust.concurrency, gust.idle-timeout, gust.timeout, gust.health.`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		name := fs.String("name", "", "function name (required)")
		image := fs.String("image", "", "image (required)")
		memory := fs.String("memory", "", "memory limit, e.g. 128Mi")
		cpu := fs.String("cpu", "", "CPU limit, e.g. 0.5")
		env, labels, annotations := kvFlag{}, kvFlag{}, kvFlag{}
		fs.Var(env, "env", "environment variable K=V (repeatable)")
		fs.Var(labels, "label", "label K=V (repeatable)")
		fs.Var(annotations, "annotation", "annotation K=V (repeatable)")
		var secrets listFlag
		fs.Var(&secrets, "secret", "secret of the function's namespace, read as the file /var/openfaas/secrets/NAME (repeatable)")
		update := fs.Bool("update", false, "fail if the function does not exist (PUT)")
		file := fs.String("f", "", "stack file: deploy its functions (its provider.gateway is used unless --gateway or $GUST_GATEWAY says otherwise)")
		filter := fs.String("filter", "", "with -f: deploy only this function")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected arguments: %v", args)
			}
			if err := stackOnlyFlags(*file, *filter); err != nil {
				return err
			}
			if *file != "" {
				if *name != "" || *image != "" {
					return usagef("-f takes no --name and no --image: the stack file names them")
				}
				return deployStack(ctx, cf, *file, *filter, *update)
			}
			spec := gust.FunctionSpec{Service: *name, Image: *image, Namespace: cf.namespace,
				EnvVars: env, Labels: labels, Annotations: annotations, Secrets: secrets}
			if *memory != "" || *cpu != "" {
				spec.Limits = &gust.FunctionResources{Memory: *memory, CPU: *cpu}
			}
			return deployFunction(ctx, cf.client(), spec, *update)
		}
	},
}

// deployFunction deploys spec through c and waits for its first instance,
// saying so: the deploy of `gust deploy` and of `gust deploy -f`.
func deployFunction(ctx context.Context, c *gateway.Client, spec gust.FunctionSpec, update bool) error {
	fmt.Fprintf(os.Stderr, "deploying %s (%s); waiting for its first instance...\n", spec.Service, spec.Image)
	if err := c.Deploy(ctx, spec, update); err != nil {
		return err
	}
	fmt.Printf("deployed %s\n", spec.Service)
	return nil
}

var invokeCommand = &Command{
	Name:  "invoke",
	Usage: "NAME [--data BODY | < body] [--method POST] [--path /sub] [--query a=b]",
	Short: "call a function and print its answer",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		data := fs.String("data", "", "request body (default: stdin when it is not a terminal)")
		method := fs.String("method", "", "HTTP method (default POST with a body, GET without)")
		path := fs.String("path", "", "sub-path the function sees")
		query := fs.String("query", "", "raw query string")
		headers := kvFlag{}
		fs.Var(headers, "header", "request header K=V (repeatable)")
		verbose := fs.Bool("v", false, "print the status and headers to stderr")
		async := fs.Bool("async", false, "enqueue the call and print its call id (202) instead of waiting")
		callback := fs.String("callback", "", "with --async: URL the result is POSTed to")
		idem := fs.String("idempotency-key", "", "with --async: a repeat within the window returns the first call id")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one function NAME")
			}
			var body io.Reader
			if *data != "" {
				body = strings.NewReader(*data)
			} else if st, err := os.Stdin.Stat(); err == nil && st.Mode()&os.ModeCharDevice == 0 {
				body = os.Stdin
			}
			m := *method
			if m == "" {
				m = http.MethodGet
				if body != nil {
					m = http.MethodPost
				}
			}
			h := http.Header{}
			for k, v := range headers {
				h.Set(k, v)
			}
			if *path != "" && !strings.HasPrefix(*path, "/") {
				*path = "/" + *path
			}
			if *async {
				if *callback != "" {
					h.Set(gust.HeaderCallbackURL, *callback)
				}
				if *idem != "" {
					h.Set(gust.HeaderIdempotencyKey, *idem)
				}
				if *method == "" {
					m = http.MethodPost
				}
				id, err := cf.client().InvokeAsync(ctx, strings.ToUpper(m), args[0], cf.namespace, *path, *query, body, h)
				if err != nil {
					return err
				}
				fmt.Println(id)
				return nil
			}
			if *callback != "" || *idem != "" {
				return usagef("--callback and --idempotency-key go with --async")
			}
			resp, err := cf.client().Invoke(ctx, strings.ToUpper(m), args[0], cf.namespace, *path, *query, body, h)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if *verbose {
				fmt.Fprintf(os.Stderr, "%s\n", resp.Status)
				for k, v := range resp.Header {
					fmt.Fprintf(os.Stderr, "%s: %s\n", k, strings.Join(v, ", "))
				}
			}
			if resp.StatusCode >= 400 && resp.Header.Get("X-Call-Id") == "" {
				return gateway.ResponseError(resp)
			}
			if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode >= 400 {
				return fmt.Errorf("function answered %s", resp.Status)
			}
			return nil
		}
	},
}

var listCommand = &Command{
	Name:  "list",
	Short: "list functions",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, args []string) error {
			fns, err := cf.client().Functions(ctx, cf.namespace)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(fns)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tIMAGE\tREPLICAS\tAVAILABLE\tINVOCATIONS")
			for _, f := range fns {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\n", f.Name, f.Image, f.Replicas, f.AvailableReplicas, f.InvocationCount)
			}
			return tw.Flush()
		}
	},
}

var describeCommand = &Command{
	Name:  "describe",
	Usage: "NAME",
	Short: "show one function as JSON",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one function NAME")
			}
			f, err := cf.client().Function(ctx, cf.namespace, args[0])
			if err != nil {
				return err
			}
			return printJSON(f)
		}
	},
}

var rmCommand = &Command{
	Name:  "rm",
	Usage: "NAME",
	Short: "delete a function and its containers",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one function NAME")
			}
			if err := cf.client().Delete(ctx, cf.namespace, args[0]); err != nil {
				return err
			}
			fmt.Printf("removed %s\n", args[0])
			return nil
		}
	},
}

var scaleCommand = &Command{
	Name:  "scale",
	Usage: "NAME N",
	Short: "give a function N instances now, as OpenFaaS sets replicas (autoscaling moves it within min and max afterwards; 0 stops its idle instances)",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var cf clientFlags
		cf.register(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) != 2 {
				return usagef("want NAME and N")
			}
			n, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || n < 0 {
				return usagef("N %q: want a whole number >= 0", args[1])
			}
			if err := cf.client().Scale(ctx, cf.namespace, args[0], n); err != nil {
				return err
			}
			fmt.Printf("scaled %s to %d instances\n", args[0], n)
			return nil
		}
	},
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
