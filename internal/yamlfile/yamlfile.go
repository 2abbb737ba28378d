// Package yamlfile decodes meshid's YAML files strictly and reports problems
// as "file:line: message", so an operator can jump straight to the mistake.
// It owns positions and error wording; it never knows what the documents mean.
package yamlfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Doc is a decoded document that remembers where each value came from.
type Doc struct {
	name string
	root *yaml.Node // the mapping at the top of the document; nil for an empty file
}

// Decode decodes data into v, rejecting unknown keys, and returns the
// document for position lookups. name is used in error messages (a path).
// An empty document leaves v untouched.
func Decode(name string, data []byte, v any) (*Doc, error) {
	doc := &Doc{name: name}
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, doc.rewrite(err)
	}
	if len(n.Content) == 0 {
		return doc, nil
	}
	doc.root = n.Content[0]

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return nil, doc.rewrite(err)
	}
	return doc, nil
}

// Name is the file name used in messages.
func (d *Doc) Name() string { return d.name }

// Line returns the line of the value at path (map keys as strings, sequence
// indexes as ints), or of the deepest ancestor that exists; 0 if unknown.
func (d *Doc) Line(path ...any) int {
	n := d.root
	line := 0
	if n != nil {
		line = n.Line
	}
	for _, p := range path {
		next, at := child(n, p)
		if next == nil {
			break
		}
		n, line = next, at
	}
	return line
}

// Errorf formats an error located at path: "file:line: message".
func (d *Doc) Errorf(path []any, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line := d.Line(path...); line > 0 {
		return fmt.Errorf("%s:%d: %s", d.name, line, msg)
	}
	return fmt.Errorf("%s: %s", d.name, msg)
}

// child returns the node at key or index p of n and the line to report for
// it: a map value is reported at its key, which is where people look.
func child(n *yaml.Node, p any) (*yaml.Node, int) {
	if n == nil {
		return nil, 0
	}
	switch k := p.(type) {
	case string:
		if n.Kind != yaml.MappingNode {
			return nil, 0
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				return n.Content[i+1], n.Content[i].Line
			}
		}
	case int:
		if n.Kind == yaml.SequenceNode && k >= 0 && k < len(n.Content) {
			return n.Content[k], n.Content[k].Line
		}
	}
	return nil, 0
}

// yaml.v3 words errors as "yaml: line 3: ..." or, for type errors, as a list
// of "line 3: ..." entries; rewrite each into "file:3: ...".
var linePrefix = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var unknownField = regexp.MustCompile(`^field (\S+) not found in type .*$`)

func (d *Doc) rewrite(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, 0, len(te.Errors))
		for _, e := range te.Errors {
			errs = append(errs, d.rewriteOne(e))
		}
		return errors.Join(errs...)
	}
	return d.rewriteOne(err.Error())
}

func (d *Doc) rewriteOne(msg string) error {
	m := linePrefix.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Errorf("%s: %s", d.name, msg)
	}
	line, _ := strconv.Atoi(m[1])
	text := m[2]
	if u := unknownField.FindStringSubmatch(text); u != nil {
		text = fmt.Sprintf("unknown key %q", u[1])
	}
	return fmt.Errorf("%s:%d: %s", d.name, line, text)
}
