package main

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

// templates are the function templates of `gust new`, one folder per
// --lang. Files end in .tmpl so the go command does not take them for
// packages of this module.
//
//go:embed templates
var templates embed.FS

// templateLangs lists the templates' names, sorted.
func templateLangs() []string {
	entries, _ := fs.ReadDir(templates, "templates")
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

var newCommand = &Command{
	Name:  "new",
	Usage: "NAME [--lang go|http] [--prefix REGISTRY/USER] [-f stack.yml]",
	Short: "write a new function from a template and add it to a stack file",
	Long: `Writes the folder NAME/ (next to the stack file) from a template and adds
the function to the stack file: stack.yml by default, created when there
is none, else the function is appended to its functions (faas-cli new
--append does the same). Then:

  gust build -f stack.yml     compile every function into an image
  gust deploy -f stack.yml    deploy them

Templates:
  go    a handler on the Gust Go SDK (functions-sdk). The SDK ships with
        gust: it is written to NAME/.sdk and the function's go.mod points
        there, so it builds with no network.
  http  a plain net/http server on $PORT answering /_/health, standard
        library only: the contract a function in any language follows.

NAME must be a DNS-1123 label (lowercase letters, digits and '-', at most
63), as in OpenFaaS.`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		lang := fs.String("lang", "go", "template: "+strings.Join(templateLangs(), ", "))
		prefix := fs.String("prefix", "", "image prefix, e.g. registry.example.com/team: the image is PREFIX/NAME:latest")
		file := fs.String("f", "stack.yml", "stack file to create or append to")
		gw := fs.String("gateway", "", "gateway a new stack file names (default $GUST_GATEWAY, else "+defaultGateway+")")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one function NAME")
			}
			gateway := *gw
			if gateway == "" {
				gateway = resolveGateway("", userConfig{})
			}
			dir, err := newFunction(*file, args[0], *lang, *prefix, gateway)
			if err != nil {
				return err
			}
			fmt.Printf("wrote %s/ and added %s to %s\nnext: gust build -f %[3]s && gust deploy -f %[3]s\n", dir, args[0], *file)
			return nil
		}
	},
}

// newFunction writes the folder of function name from template lang next
// to the stack file and adds the function to that file; it returns the
// folder. Nothing is written when the name is invalid, the folder exists
// or the stack file already has the function.
func newFunction(stackFile, name, lang, prefix, gateway string) (string, error) {
	if err := checkFunctionName(name); err != nil {
		return "", err
	}
	tmplDir := path.Join("templates", lang)
	if st, err := fs.Stat(templates, tmplDir); err != nil || !st.IsDir() {
		return "", usagef("--lang %q: want one of %s", lang, strings.Join(templateLangs(), ", "))
	}
	image := name + ":latest"
	if prefix != "" {
		image = strings.TrimRight(prefix, "/") + "/" + image
	}
	dir := filepath.Join(filepath.Dir(stackFile), name)
	if _, err := os.Stat(dir); err == nil {
		return "", fmt.Errorf("folder %s exists: pick another name, or remove it", dir)
	}
	// The stack file first: it refuses a duplicate before any file is
	// written.
	if err := checkStackHasRoom(stackFile, name); err != nil {
		return "", err
	}
	if err := writeTemplate(tmplDir, dir, name, filepath.Base(stackFile)); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if err := writeSDK(dir); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if err := AddToStack(stackFile, name, lang, "./"+name, image, gateway); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// checkStackHasRoom fails when the stack file at path cannot take the
// function name: it holds one by that name, or is no stack file.
func checkStackHasRoom(path, name string) error {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read stack file: %w", err)
	}
	_, err = appendFunction(path, old, name, functionEntry(name, "go", "./"+name, name+":latest"))
	return err
}

// writeTemplate renders every file of the template folder tmplDir into
// dir, dropping the .tmpl suffix.
func writeTemplate(tmplDir, dir, name, stack string) error {
	data := struct{ Name, Stack string }{name, stack}
	return fs.WalkDir(templates, tmplDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, tmplDir), "/")
		out := filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(rel, ".tmpl")))
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		src, err := templates.ReadFile(p)
		if err != nil {
			return err
		}
		t, err := template.New(rel).Parse(string(src))
		if err != nil {
			return fmt.Errorf("template %s: %w", p, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return fmt.Errorf("template %s: %w", p, err)
		}
		return os.WriteFile(out, buf.Bytes(), 0o644)
	})
}
