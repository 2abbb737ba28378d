package yamlfile

import (
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name  string        `yaml:"name"`
	TTL   time.Duration `yaml:"ttl"`
	Items []struct {
		ID string `yaml:"id"`
	} `yaml:"items"`
}

func TestDecodeErrorsNameFileAndLine(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"unknown key", "name: a\nbogus: 1\n", "f.yaml:2: unknown key \"bogus\""},
		{"unknown nested key", "items:\n  - id: a\n    idd: b\n", "f.yaml:3: unknown key \"idd\""},
		{"bad duration", "ttl: forever\n", "f.yaml:1:"},
		{"syntax", "name: [a\n", "f.yaml:"},
		{"wrong type", "items: 3\n", "f.yaml:1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sample
			_, err := Decode("f.yaml", []byte(tt.in), &s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLineAndErrorf(t *testing.T) {
	var s sample
	doc, err := Decode("f.yaml", []byte("name: a\nitems:\n  - id: x\n  - id: y\n"), &s)
	if err != nil {
		t.Fatal(err)
	}
	if s.Items[1].ID != "y" {
		t.Fatalf("decoded %+v", s)
	}
	for _, tc := range []struct {
		path []any
		line int
	}{
		{[]any{"name"}, 1},
		{[]any{"items", 1, "id"}, 4},
		{[]any{"items", 0}, 3},
		{[]any{"items", 7}, 2}, // falls back to the nearest ancestor
		{[]any{"missing"}, 1},
	} {
		if got := doc.Line(tc.path...); got != tc.line {
			t.Errorf("Line(%v) = %d, want %d", tc.path, got, tc.line)
		}
	}
	if got := doc.Errorf([]any{"items", 1, "id"}, "bad id %q", "y").Error(); got != `f.yaml:4: bad id "y"` {
		t.Errorf("Errorf = %q", got)
	}
}

func TestEmptyDocument(t *testing.T) {
	s := sample{Name: "default"}
	doc, err := Decode("f.yaml", nil, &s)
	if err != nil || s.Name != "default" {
		t.Fatalf("Decode(empty) = %v, %+v", err, s)
	}
	if got := doc.Errorf(nil, "x").Error(); got != "f.yaml: x" {
		t.Errorf("Errorf on empty doc = %q", got)
	}
}
