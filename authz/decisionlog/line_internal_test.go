package decisionlog

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// canonicalJSON re-encodes JSON text with sorted keys, numbers as written.
func canonicalJSON(t *testing.T, bs []byte) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(bs))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v in %s", err, bs)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// FuzzDecisionLine holds the decision log's writer to encoding/json: with
// room for everything, a document written as the result and as
// parsed_body reads back as json.Marshal writes it; with little room, the
// line is still one line of JSON and cut strings say how long they were.
// The seeds run with go test.
func FuzzDecisionLine(f *testing.F) {
	for _, s := range []string{`{"a": "b"}`, `["\u2028", "\u0000\u001f\"\\", "é", "\ud83d\ude00"]`, `{"x": 1E400, "y": -0.5e-3}`, `[[[]], {}, null, true, false]`, `"` + strings.Repeat("ü", 100) + `"`} {
		f.Add(s, uint16(0))
	}
	f.Fuzz(func(t *testing.T, doc string, room uint16) {
		var v any
		if err := util.UnmarshalJSON([]byte(doc), &v); err != nil {
			return
		}
		val, err := ast.InterfaceToValue(v)
		if err != nil {
			return
		}
		want, err := json.Marshal(ast.MustJSON(val))
		if err != nil {
			t.Fatal(err)
		}
		r := &Record{ID: "id", Time: time.Unix(0, 0), Decision: val, Input: ast.NewObject(ast.Item(ast.StringTerm("parsed_body"), ast.NewTerm(val)))}

		w := &lineWriter{maxField: 1 << 30, maxInput: 1 << 30}
		w.line(r)
		var line struct {
			Input struct {
				ParsedBody json.RawMessage `json:"parsed_body"`
			} `json:"input"`
			Result    json.RawMessage `json:"result"`
			Truncated bool            `json:"truncated"`
		}
		if bytes.Count(w.buf, []byte("\n")) != 1 || json.Unmarshal(w.buf, &line) != nil {
			t.Fatalf("not one line of JSON: %q", w.buf)
		}
		if g, w := canonicalJSON(t, line.Result), canonicalJSON(t, want); g != w || line.Truncated {
			t.Fatalf("result written as %s, want %s", g, w)
		}
		if g, w := canonicalJSON(t, line.Input.ParsedBody), canonicalJSON(t, want); g != w {
			t.Fatalf("parsed_body written as %s, want %s", g, w)
		}

		small := &lineWriter{maxField: 64 + int(room)%256, maxInput: 64 + int(room)%1024}
		small.line(r)
		if bytes.Count(small.buf, []byte("\n")) != 1 || !json.Valid(small.buf) {
			t.Fatalf("with caps %d/%d, not one line of JSON: %q", small.maxField, small.maxInput, small.buf)
		}
		if len(line.Result) > small.maxField && !small.truncated {
			t.Fatalf("a %d-byte result under a %d-byte cap is not marked truncated: %s", len(line.Result), small.maxField, small.buf)
		}
	})
}
