package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/gustfaas/gust"
)

func TestParseStack(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		// An OpenFaaS stack file with fields Gust ignores (build_args).
		s, err := ParseStack("stack.yml", []byte(`version: 1.0
provider:
  name: openfaas
  gateway: http://gw:8080
functions:
  hello:
    lang: go
    handler: ./hello
    image: team/hello:1
    namespace: shop
    build_args: {A: b}
    environment: {PORT_X: 8080, DEBUG: true}
    labels: {com.openfaas.scale.min: "1"}
    annotations: {owner: me}
    secrets: [api-key]
    limits: {memory: 64Mi, cpu: "0.5"}
    requests: {memory: 32Mi}
`))
		if err != nil {
			t.Fatal(err)
		}
		if s.Provider.Gateway != "http://gw:8080" || s.Version != "1.0" {
			t.Errorf("provider %+v, version %q", s.Provider, s.Version)
		}
		got := s.Functions["hello"].Spec("hello", "ignored")
		want := gust.FunctionSpec{Service: "hello", Image: "team/hello:1", Namespace: "shop",
			EnvVars:     map[string]string{"PORT_X": "8080", "DEBUG": "true"},
			Labels:      map[string]string{"com.openfaas.scale.min": "1"},
			Annotations: map[string]string{"owner": "me"}, Secrets: []string{"api-key"},
			Limits:   &gust.FunctionResources{Memory: "64Mi", CPU: "0.5"},
			Requests: &gust.FunctionResources{Memory: "32Mi"}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Spec = %+v\nwant %+v", got, want)
		}
		if got := s.Functions["hello"].HandlerDir("dir/stack.yml"); got != filepath.Join("dir", "hello") {
			t.Errorf("HandlerDir = %q", got)
		}
	})
	t.Run("NamespaceFromFlag", func(t *testing.T) {
		if got := (StackFunction{Image: "i"}).Spec("f", "team").Namespace; got != "team" {
			t.Errorf("namespace %q, want team", got)
		}
	})
	for _, c := range []struct{ name, text, want string }{
		{"NotYAML", "functions: [", "stack.yml"},
		{"Provider", "provider: {name: lambda}\nfunctions: {f: {image: i}}", "provider.name"},
		{"NoFunctions", "provider: {name: gust}\n", "functions: none listed"},
		{"BadName", "functions: {Hello_World: {image: i}}", "functions.Hello_World"},
		{"NoImage", "functions: {f: {lang: go}}", "functions.f.image: missing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseStack("stack.yml", []byte(c.text))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one naming %q", err, c.want)
			}
		})
	}
}

func TestStackEnv(t *testing.T) {
	t.Setenv("GUST_TEST_TAG", "1.2")
	t.Setenv("GUST_TEST_EMPTY", "")
	s, err := ParseStack("stack.yml", []byte(`provider: {name: gust, gateway: "${GUST_TEST_GW:-http://gw:8080}"}
functions:
  f:
    image: team/f:${GUST_TEST_TAG}
    environment: {A: "${GUST_TEST_EMPTY:-dflt}", B: "${GUST_TEST_UNSET}", C: "$GUST_TEST_TAG", D: "x$y"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Provider.Gateway; got != "http://gw:8080" {
		t.Errorf("gateway %q", got)
	}
	f := s.Functions["f"]
	want := map[string]string{"A": "dflt", "B": "", "C": "$GUST_TEST_TAG", "D": "x$y"}
	if f.Image != "team/f:1.2" || !reflect.DeepEqual(f.Environment, want) {
		t.Errorf("image %q, environment %v; want team/f:1.2, %v", f.Image, f.Environment, want)
	}
}

func TestStackSelected(t *testing.T) {
	s := &Stack{Functions: map[string]StackFunction{"b": {}, "a": {}}}
	if got, _ := s.Selected("f", ""); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("all = %v", got)
	}
	if got, _ := s.Selected("f", "b"); !reflect.DeepEqual(got, []string{"b"}) {
		t.Errorf("filter b = %v", got)
	}
	if _, err := s.Selected("f", "c"); err == nil {
		t.Error("filter c: no error")
	}
}

func TestAddToStack(t *testing.T) {
	t.Run("NewThenAppend", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "stack.yml")
		if err := AddToStack(path, "one", "go", "./one", "one:latest", "http://gw:1"); err != nil {
			t.Fatal(err)
		}
		if err := AddToStack(path, "two", "http", "./two", "reg/two:latest", "http://other"); err != nil {
			t.Fatal(err)
		}
		s, err := ReadStack(path)
		if err != nil {
			t.Fatal(err)
		}
		if s.Provider.Name != "gust" || s.Provider.Gateway != "http://gw:1" {
			t.Errorf("provider %+v: want gust at the first gateway", s.Provider)
		}
		want := map[string]StackFunction{
			"one": {Lang: "go", Handler: "./one", Image: "one:latest", Limits: &StackResources{Memory: "128Mi"}},
			"two": {Lang: "http", Handler: "./two", Image: "reg/two:latest", Limits: &StackResources{Memory: "128Mi"}},
		}
		if !reflect.DeepEqual(s.Functions, want) {
			t.Errorf("functions %+v\nwant %+v", s.Functions, want)
		}
		if err := AddToStack(path, "two", "go", "./two", "two:latest", ""); err == nil || !strings.Contains(err.Error(), "already there") {
			t.Errorf("second two: err = %v", err)
		}
	})
	t.Run("AppendKeepsTheRest", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "stack.yml")
		old := `# my functions
version: 1.0
functions:
  old:
    lang: dockerfile # built elsewhere
    image: team/old:${GUST_TEST_UNSET_TAG:-2}
provider:
  name: openfaas
  gateway: http://gw:9
configuration:
  templates:
    - name: golang-middleware
`
		if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := AddToStack(path, "new", "go", "./new", "new:latest", ""); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		for _, keep := range []string{"# my functions", "# built elsewhere", "golang-middleware", "gateway: http://gw:9", "new:\n    lang: go"} {
			if !strings.Contains(string(b), keep) {
				t.Errorf("after append, no %q in\n%s", keep, b)
			}
		}
		s, err := ReadStack(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Functions) != 2 || s.Functions["old"].Image != "team/old:2" {
			t.Errorf("functions %+v", s.Functions)
		}
	})
	t.Run("EmptyFunctions", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "stack.yml")
		os.WriteFile(path, []byte("provider: {name: gust}\nfunctions:\n"), 0o644)
		if err := AddToStack(path, "f", "go", "./f", "f:latest", ""); err != nil {
			t.Fatal(err)
		}
		if s, err := ReadStack(path); err != nil || len(s.Functions) != 1 {
			t.Errorf("stack %+v, %v", s, err)
		}
	})
	t.Run("NotAStack", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "stack.yml")
		os.WriteFile(path, []byte("- a\n- b\n"), 0o644)
		if err := AddToStack(path, "f", "go", "./f", "f:latest", ""); err == nil {
			t.Error("no error")
		}
	})
}

func TestNewFunction(t *testing.T) {
	t.Run("BadName", func(t *testing.T) {
		dir := t.TempDir()
		for _, name := range []string{"Hello", "a_b", "-a", strings.Repeat("a", 64), ""} {
			if _, err := newFunction(filepath.Join(dir, "stack.yml"), name, "go", "", ""); err == nil || !strings.Contains(err.Error(), "function name") {
				t.Errorf("%q: err = %v", name, err)
			}
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("bad names wrote %d files", len(entries))
		}
	})
	t.Run("Duplicate", func(t *testing.T) {
		stack := filepath.Join(t.TempDir(), "stack.yml")
		if _, err := newFunction(stack, "a", "go", "", "http://gw"); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(filepath.Join(filepath.Dir(stack), "a"))
		if _, err := newFunction(stack, "a", "http", "", ""); err == nil {
			t.Fatal("a second a: no error")
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(stack), "a")); err == nil {
			t.Error("the refused function's folder was written")
		}
	})
	// Each template builds and passes its test with the go command and no
	// network (GOPROXY=off): the go template with the SDK gust wrote.
	for _, lang := range templateLangs() {
		t.Run("Builds/"+lang, func(t *testing.T) {
			if _, err := exec.LookPath("go"); err != nil {
				t.Skip("no go command")
			}
			stack := filepath.Join(t.TempDir(), "stack.yml")
			dir, err := newFunction(stack, "fn-"+lang, lang, "reg.example", "http://gw")
			if err != nil {
				t.Fatal(err)
			}
			s, err := ReadStack(stack)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Functions["fn-"+lang].Image; got != "reg.example/fn-"+lang+":latest" {
				t.Errorf("image %q", got)
			}
			cmd := exec.Command("go", "test", "./...")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go test in %s: %v\n%s", dir, err, out)
			}
		})
	}
}

// The SDK the CLI ships is every Go file of functions-sdk but the tests:
// a file added there must be embedded too (sdk_source.go).
func TestFunctionsSDKComplete(t *testing.T) {
	var want, got []string
	files, _ := filepath.Glob("../../functions-sdk/*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			want = append(want, filepath.Base(f))
		}
	}
	fs.WalkDir(gust.FunctionsSDK, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			got = append(got, filepath.Base(p))
		}
		return err
	})
	sort.Strings(want)
	sort.Strings(got)
	if len(want) == 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("embedded SDK files %v, want %v", got, want)
	}
}
