package jsonterm_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
)

// opaTerm is what OPA makes of s: the oracle Parse is held to.
func opaTerm(s string) (ast.Value, error) {
	var v any
	if err := util.UnmarshalJSON([]byte(s), &v); err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(v)
}

// roomy is a budget no test document reaches unless it means to.
func roomy() *jsonterm.Budget { return jsonterm.NewBudget(1000, 1<<20, nil) }

// assertLikeOPA parses s both ways: both refuse it, or both make the
// same value.
func assertLikeOPA(t *testing.T, s string) {
	t.Helper()
	want, wantErr := opaTerm(s)
	got, err := jsonterm.Parse(s, roomy())
	switch {
	case errors.Is(err, jsonterm.ErrTooDeep):
		// encoding/json allows 10000 levels; the roomy budget 1000.
		return
	case wantErr != nil && err == nil:
		t.Fatalf("Parse(%q) = %v; OPA refuses it: %v", s, got, wantErr)
	case wantErr == nil && err != nil:
		t.Fatalf("Parse(%q): %v; OPA makes %v of it", s, err, want)
	case err == nil && got.Value.Compare(want) != 0:
		t.Fatalf("Parse(%q) = %v, OPA makes %v", s, got, want)
	case err == nil && got.String() != ast.NewTerm(want).String():
		// Compare alone would miss an object with a duplicate key.
		t.Fatalf("Parse(%q) = %s, OPA makes %s", s, got, want)
	}
}

var cases = []string{
	`null`, `true`, `false`, `0`, `-0`, `12`, `-12.5e+3`, `1E-2`, `12345678901234567890123`,
	`1e999999999`, `1e-999999999`, `0.0000000000000000000001`,
	`""`, `"a"`, `"é"`, `"\u00e9\n\t\"\\\/\b\f\r"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ude00"`, `"\ud83dx"`,
	`"\ud83d\u0041"`, `"\ud83d\ud83d\ude00"`, "\"\xff\"", "\"a\xffb\xc3\"", "\"\xed\xa0\x80\"", `"\u0000"`,
	`[]`, `{}`, `[1, [2, [3, {}]]]`, ` {"a" : 1 , "b":[true,false,null]} `, "\t\r\n[1]\n",
	`{"a": 1, "a": 2}`, `{"a": {"x": 1}, "b": 2, "a": [3]}`,
	`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k3":"again","k16":"again"}`,
	// Refused.
	``, ` `, `{`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{a: 1}`, `[1 2]`, `01`, `1.`, `.5`, `-`, `1e`, `+1`, `tru`, `nul`, `"abc`,
	`"\x"`, `"\u12"`, `"\u12g4"`, "\"a\nb\"", `{} x`, `1 2`, `[] ]`, `NaN`, `Infinity`, "\ufeff{}", `"\`, `[`, `{"a":`,
}

func TestParseLikeOPA(t *testing.T) {
	for _, s := range cases {
		assertLikeOPA(t, s)
	}
}

// FuzzParse holds Parse to OPA's decoding for any text. The seeds run
// with go test.
func FuzzParse(f *testing.F) {
	for _, s := range cases {
		f.Add(s)
	}
	f.Fuzz(assertLikeOPA)
}

func TestParseDepth(t *testing.T) {
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	if _, err := jsonterm.Parse(nest(64), jsonterm.NewBudget(64, 1000, nil)); err != nil {
		t.Errorf("64 levels with a depth of 64: %v", err)
	}
	for _, s := range []string{nest(65), strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65), strings.Repeat("[", 1<<20)} {
		_, err := jsonterm.Parse(s, jsonterm.NewBudget(64, 1<<30, nil))
		if !errors.Is(err, jsonterm.ErrTooDeep) || !strings.Contains(err.Error(), "too deep: nests more than 64 levels") {
			t.Errorf("%.20s... with a depth of 64: %v, want too deep", s, err)
		}
	}
}

// wide is an object of n small fields, the shape that costs a decoder the
// most per byte.
func wide(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"f` + strconv.Itoa(i) + `":1`)
	}
	b.WriteByte('}')
	return b.String()
}

// TestParseValues: a document with more values than the budget is refused
// after building at most that many, having read only as far as they go.
func TestParseValues(t *testing.T) {
	b := jsonterm.NewBudget(64, 11, nil)
	if _, err := jsonterm.Parse(wide(10), b); err != nil || b.Spent() != 11 {
		t.Errorf("10 fields (11 values) with room for 11: %v, spent %d", err, b.Spent())
	}
	body := wide(200_000)
	b = jsonterm.NewBudget(64, 10_000, nil)
	_, err := jsonterm.Parse(body, b)
	if !errors.Is(err, jsonterm.ErrTooMany) || !strings.Contains(err.Error(), "too many values: more than 10000") {
		t.Fatalf("200000 fields with room for 10000: %v, want too many", err)
	}
	if b.Spent() > 10_000 {
		t.Errorf("built %d values with room for 10000", b.Spent())
	}
	// The error says where parsing stopped: within the first 10000 fields.
	at := strings.Index(body, `"f10000"`)
	rest, _ := strings.CutPrefix(err.Error(), "at byte ")
	n, _, _ := strings.Cut(rest, ":")
	if offset, scanErr := strconv.Atoi(n); scanErr != nil || offset > at {
		t.Errorf("stopped at byte %s, want before byte %d of %d: %v", n, at, len(body), err)
	}
}

// TestParseStops: the stop function is polled as values are built, and
// its error ends the parse at once, wrapped.
func TestParseStops(t *testing.T) {
	errLate := errors.New("too late")
	polls := 0
	stop := func() error {
		if polls++; polls == 3 {
			return errLate
		}
		return nil
	}
	b := jsonterm.NewBudget(64, 1<<20, stop)
	_, err := jsonterm.Parse(wide(100_000), b)
	if !errors.Is(err, errLate) {
		t.Fatalf("Parse = %v, want the stop function's error", err)
	}
	if polls != 3 || b.Spent() > 3*1024 {
		t.Errorf("stopped after %d polls and %d values, want 3 polls and at most %d values", polls, b.Spent(), 3*1024)
	}
}

// TestParseSharesBudget: documents drawing on one budget share its values.
func TestParseSharesBudget(t *testing.T) {
	b := jsonterm.NewBudget(64, 5, nil)
	if _, err := jsonterm.Parse(`[1, 2]`, b); err != nil {
		t.Fatal(err)
	}
	if _, err := jsonterm.Parse(`[1, 2, 3]`, b); !errors.Is(err, jsonterm.ErrTooMany) {
		t.Errorf("second document: %v, want too many (3 + 4 values with room for 5)", err)
	}
}

// BenchmarkParse parses a wide document the way OPA does (util.UnmarshalJSON,
// ast.InterfaceToValue) and with Parse, in one run.
func BenchmarkParse(b *testing.B) {
	body := wide(10_000)
	b.Run("opa", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := opaTerm(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jsonterm", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jsonterm.Parse(body, jsonterm.NewBudget(64, 1<<20, nil)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
