package main

// Stack files: OpenFaaS's stack.yml shape, which `gust new` writes and
// `gust build -f` and `gust deploy -f` read. Fields faas-cli knows and Gust
// has no use for (build_args, template configuration, ...) are ignored, so
// an OpenFaaS stack file deploys as is.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/gustfaas/gust"
	"go.yaml.in/yaml/v3"
)

// Stack is a stack file.
type Stack struct {
	Version   string                   `yaml:"version"`
	Provider  StackProvider            `yaml:"provider"`
	Functions map[string]StackFunction `yaml:"functions"`
}

// StackProvider names the platform and its gateway.
type StackProvider struct {
	Name    string `yaml:"name"`
	Gateway string `yaml:"gateway,omitempty"`
}

// StackFunction is one function of a stack file: how to build it (lang,
// handler) and what to deploy (the rest, as `gust deploy` flags).
type StackFunction struct {
	Lang      string `yaml:"lang"`
	Handler   string `yaml:"handler"`
	Image     string `yaml:"image"`
	SkipBuild bool   `yaml:"skip_build,omitempty"`
	Namespace string `yaml:"namespace,omitempty"`

	Environment            map[string]string `yaml:"environment,omitempty"`
	Labels                 map[string]string `yaml:"labels,omitempty"`
	Annotations            map[string]string `yaml:"annotations,omitempty"`
	Secrets                []string          `yaml:"secrets,omitempty"`
	Constraints            []string          `yaml:"constraints,omitempty"`
	Limits                 *StackResources   `yaml:"limits,omitempty"`
	Requests               *StackResources   `yaml:"requests,omitempty"`
	ReadOnlyRootFilesystem bool              `yaml:"readonly_root_filesystem,omitempty"`
}

// StackResources are memory and CPU in Kubernetes notation ("128Mi",
// "0.5").
type StackResources struct {
	Memory string `yaml:"memory,omitempty"`
	CPU    string `yaml:"cpu,omitempty"`
}

// buildLangs are the languages `gust build` compiles: both are Go main
// packages (see templates/).
var buildLangs = map[string]bool{"go": true, "http": true}

// stackError is a mistake in a stack file: it names the file and the
// field, as config errors do.
func stackError(file, field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", file, field, fmt.Sprintf(format, args...))
}

// ParseStack reads a stack file's bytes and checks what every verb needs:
// a known provider, at least one function, valid names and an image for
// each. file names the file in errors.
func ParseStack(file string, data []byte) (*Stack, error) {
	var s Stack
	if err := yaml.Unmarshal(expandEnv(data), &s); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	switch s.Provider.Name {
	case "gust", "openfaas", "":
	default:
		return nil, stackError(file, "provider.name", "%q: want gust (or openfaas)", s.Provider.Name)
	}
	if len(s.Functions) == 0 {
		return nil, stackError(file, "functions", "none listed")
	}
	for name, fn := range s.Functions {
		if err := checkFunctionName(name); err != nil {
			return nil, stackError(file, "functions."+name, "%v", err)
		}
		if fn.Image == "" {
			return nil, stackError(file, "functions."+name+".image", "missing")
		}
	}
	return &s, nil
}

// envRef is ${NAME} or ${NAME:-default} in a stack file.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces ${NAME} with the variable's value and ${NAME:-word}
// with it or, when it is unset or empty, word: the substitution faas-cli
// makes in stack files (image tags per environment, gateway URLs). A bare
// $NAME is left alone, so a value may hold a dollar sign.
func expandEnv(data []byte) []byte {
	return envRef.ReplaceAllFunc(data, func(ref []byte) []byte {
		m := envRef.FindSubmatch(ref)
		if v := os.Getenv(string(m[1])); v != "" || len(m[2]) == 0 {
			return []byte(v)
		}
		return m[3]
	})
}

// ReadStack reads and parses the stack file at path.
func ReadStack(path string) (*Stack, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read stack file: %w", err)
	}
	return ParseStack(path, data)
}

// checkFunctionName says why name cannot name a function: it must be a
// DNS-1123 label, as in OpenFaaS (and Kubernetes).
func checkFunctionName(name string) error {
	if !gust.ValidName(name) {
		return fmt.Errorf("function name %q: want at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// Selected returns the names of the functions filter selects, sorted: all
// of them when filter is empty, else the one it names (an error when there
// is none).
func (s *Stack) Selected(file, filter string) ([]string, error) {
	if filter != "" {
		if _, ok := s.Functions[filter]; !ok {
			return nil, fmt.Errorf("%s: no function %q (--filter)", file, filter)
		}
		return []string{filter}, nil
	}
	names := make([]string, 0, len(s.Functions))
	for n := range s.Functions {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Spec is the deploy request for the function name of the stack: what the
// flags of `gust deploy` would give. namespace applies when the function
// names none.
func (fn StackFunction) Spec(name, namespace string) gust.FunctionSpec {
	spec := gust.FunctionSpec{
		Service: name, Image: fn.Image, Namespace: fn.Namespace,
		EnvVars: fn.Environment, Labels: fn.Labels, Annotations: fn.Annotations,
		Secrets: fn.Secrets, Constraints: fn.Constraints, ReadOnlyRootFilesystem: fn.ReadOnlyRootFilesystem,
	}
	if spec.Namespace == "" {
		spec.Namespace = namespace
	}
	if fn.Limits != nil {
		spec.Limits = &gust.FunctionResources{Memory: fn.Limits.Memory, CPU: fn.Limits.CPU}
	}
	if fn.Requests != nil {
		spec.Requests = &gust.FunctionResources{Memory: fn.Requests.Memory, CPU: fn.Requests.CPU}
	}
	return spec
}

// HandlerDir is the function's folder: its handler, relative to the
// folder of the stack file at file.
func (fn StackFunction) HandlerDir(file string) string {
	if filepath.IsAbs(fn.Handler) {
		return fn.Handler
	}
	return filepath.Join(filepath.Dir(file), fn.Handler)
}

// newStackText is the stack file `gust new` writes when there is none.
func newStackText(gateway string) string {
	return fmt.Sprintf(`version: 1.0
provider:
  name: gust
  gateway: %s
functions:
`, gateway)
}

// functionEntry is one function's entry in a stack file, indented by two
// spaces under functions:. The optional fields are shown commented out,
// so the file documents what it can hold.
func functionEntry(name, lang, handler, image string) string {
	return fmt.Sprintf(`  %[1]s:
    lang: %[2]s
    handler: %[3]s
    image: %[4]s
    # environment:
    #   LOG_LEVEL: debug
    # labels:                    # scaling, see README: com.openfaas.scale.min/max, gust.concurrency, gust.idle-timeout, gust.timeout
    #   com.openfaas.scale.min: "1"
    # annotations:
    #   owner: me
    # secrets:                   # 'gust secret create NAME'; the function reads /var/openfaas/secrets/NAME
    #   - api-key
    limits:
      memory: 128Mi
`, name, lang, handler, image)
}

// AddToStack adds a function entry to the stack file at path: it writes a
// new file when there is none (with gateway as the provider's gateway),
// else it appends the entry under functions:, keeping the rest of the
// file and its comments. A function of the same name is an error, and the
// file is not touched.
func AddToStack(path, name, lang, handler, image, gateway string) error {
	entry := functionEntry(name, lang, handler, image)
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		text := newStackText(gateway) + entry
		if _, err := ParseStack(path, []byte(text)); err != nil {
			return err // a bug, or a name that is no YAML
		}
		return os.WriteFile(path, []byte(text), 0o644)
	}
	if err != nil {
		return fmt.Errorf("read stack file: %w", err)
	}
	out, err := appendFunction(path, old, name, entry)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// appendFunction returns the stack file old with entry added under its
// functions mapping. It edits the YAML node tree rather than the text, so
// functions: need not be the last key; yaml.v3 keeps comments on nodes.
func appendFunction(file string, old []byte, name, entry string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(old, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var entryDoc yaml.Node
	if err := yaml.Unmarshal([]byte(entry), &entryDoc); err != nil {
		return nil, fmt.Errorf("function entry: %w", err)
	}
	key, val := entryDoc.Content[0].Content[0], entryDoc.Content[0].Content[1]
	if doc.Kind == 0 { // an empty file
		return []byte(newStackText("") + entry), nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a stack file (want a mapping with functions:)", file)
	}
	root := doc.Content[0]
	var fns *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "functions" {
			fns = root.Content[i+1]
		}
	}
	switch {
	case fns == nil:
		fns = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "functions"}, fns)
	case fns.Kind == yaml.ScalarNode && fns.Tag == "!!null":
		*fns = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	case fns.Kind != yaml.MappingNode:
		return nil, stackError(file, "functions", "not a mapping of names to functions")
	}
	for i := 0; i+1 < len(fns.Content); i += 2 {
		if fns.Content[i].Value == name {
			return nil, stackError(file, "functions."+name, "already there: pick another name, or remove it first")
		}
	}
	fns.Style = 0 // block style, even if it was written {}
	fns.Content = append(fns.Content, key, val)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	// The rest of the file is checked by build and deploy, with the
	// environment they run in; here only that the entry landed.
	var check Stack
	if err := yaml.Unmarshal(buf.Bytes(), &check); err != nil || check.Functions[name].Image == "" {
		return nil, fmt.Errorf("%s: adding %s did not give a stack file (%v)", file, name, err)
	}
	return buf.Bytes(), nil
}

// stackGateway makes the stack's gateway the one in use when neither the
// --gateway flag nor $GUST_GATEWAY names one, as faas-cli does with
// provider.gateway.
func stackGateway(cf *clientFlags, s *Stack) {
	if cf.gateway == "" && os.Getenv("GUST_GATEWAY") == "" {
		cf.gateway = s.Provider.Gateway
	}
}

// deployStack deploys the functions of the stack file (the one filter
// names, or all), one after the other, with the code of `gust deploy`.
func deployStack(ctx context.Context, cf clientFlags, file, filter string, update bool) error {
	s, err := ReadStack(file)
	if err != nil {
		return err
	}
	names, err := s.Selected(file, filter)
	if err != nil {
		return err
	}
	stackGateway(&cf, s)
	c := cf.client()
	for _, name := range names {
		if err := deployFunction(ctx, c, s.Functions[name].Spec(name, cf.namespace), update); err != nil {
			return fmt.Errorf("deploy %s: %w", name, err)
		}
	}
	return nil
}

// stackOnlyFlags fails when --filter comes without -f.
func stackOnlyFlags(file, filter string) error {
	if file == "" && filter != "" {
		return usagef("--filter goes with -f")
	}
	return nil
}

// sdkReplace is the replace directive of the go template's go.mod (see
// templates/go/go.mod.tmpl).
const sdkReplace = "github.com/gustfaas/gust/functions-sdk => ./.sdk"

// writeSDK writes the Go SDK that ships with gust into dir/.sdk, as a
// module of its own, when the go.mod in dir points there: the function
// then builds with the SDK of this gust and with no network. Other
// folders are left alone.
func writeSDK(dir string) error {
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil || !bytes.Contains(mod, []byte(sdkReplace)) {
		return nil
	}
	sdkDir := filepath.Join(dir, ".sdk")
	if err := os.MkdirAll(sdkDir, 0o755); err != nil {
		return fmt.Errorf("write SDK: %w", err)
	}
	files := map[string][]byte{
		"go.mod": []byte("module github.com/gustfaas/gust/functions-sdk\n\ngo 1.22\n"),
		"README": []byte("The Gust Go SDK, written here by gust (new, build) from its own copy.\nDo not edit: gust build rewrites these files.\n"),
	}
	err = fs.WalkDir(gust.FunctionsSDK, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := gust.FunctionsSDK.ReadFile(p)
		files[filepath.Base(p)] = data
		return err
	})
	if err != nil {
		return fmt.Errorf("write SDK: %w", err)
	}
	for name, data := range files {
		// Unchanged files keep their time stamps, so go build's cache
		// needs no new look.
		if old, err := os.ReadFile(filepath.Join(sdkDir, name)); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := os.WriteFile(filepath.Join(sdkDir, name), data, 0o644); err != nil {
			return fmt.Errorf("write SDK: %w", err)
		}
	}
	return nil
}
