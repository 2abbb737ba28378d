package decisionlog

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// lineWriter writes decision log lines as JSON straight from the terms of
// a Record, with no copy of the input as Go values in between, capping
// what a request's sender could make large: every string of the input and
// the result, and the error, to maxField bytes (the start of it, then a
// marker with its length); parsed_body and the result as a whole to
// maxField bytes of JSON, and the input as a whole to maxInput (replaced
// by a marker with their length). Lines accumulate in buf until the
// caller takes them.
//
// A capped value is written until it passes its limit and only counted
// from there on, so that the memory a line takes is bounded by the limits,
// not by the request; its length is still known for the marker.
type lineWriter struct {
	buf      []byte
	limit    int // bytes past this length of buf are counted in over, not kept
	over     int
	maxField int
	maxInput int
	mask     map[string]bool
	// path holds the keys from the input's root to the value being
	// written, while the input is; nil otherwise.
	path      []string
	inInput   bool
	truncated bool // this line had something cut
	reason    string
	scratch   []byte
	// Where this line's input and result are in buf (end 0: absent), and
	// the request headers it masked, for the event written from it.
	input, result span
	maskedHeaders []string
}

type span struct{ start, end int }

const noLimit = int(^uint(0) >> 1)

func (w *lineWriter) write(b []byte) {
	if w.over > 0 || len(w.buf)+len(b) > w.limit {
		w.over += len(b)
		return
	}
	w.buf = append(w.buf, b...)
}

func (w *lineWriter) writeString(s string) {
	if w.over > 0 || len(w.buf)+len(s) > w.limit {
		w.over += len(s)
		return
	}
	w.buf = append(w.buf, s...)
}

// line appends the JSON line of r to buf: the fields of OPA's decision log
// event that apply, so the same tools read both.
func (w *lineWriter) line(r *Record) {
	w.limit, w.over, w.truncated = noLimit, 0, false
	w.input, w.result, w.maskedHeaders = span{}, span{}, w.maskedHeaders[:0]
	w.writeString(`{"decision_id":`)
	w.str(r.ID, noLimit)
	w.writeString(`,"timestamp":"`)
	w.write(r.Time.UTC().AppendFormat(w.scratch[:0], time.RFC3339Nano))
	w.writeString(`"`)
	if r.Path != "" {
		w.writeString(`,"path":`)
		w.str(r.Path, noLimit)
	}
	if r.Policy != nil {
		w.writeString(`,"revision":`)
		w.str(r.Policy.Revision, noLimit)
	}
	if r.Input != nil {
		w.writeString(`,"input":`)
		w.inInput, w.path = true, w.path[:0]
		w.input.start = len(w.buf)
		w.capped(w.maxInput, func() { w.value(r.Input) })
		w.input.end = len(w.buf)
		w.inInput = false
	}
	if r.Decision != nil {
		w.writeString(`,"result":`)
		w.result.start = len(w.buf)
		w.capped(w.maxField, func() { w.value(r.Decision) })
		w.result.end = len(w.buf)
	}
	w.writeString(`,"allowed":` + strconv.FormatBool(r.Allowed))
	if r.DryRun {
		w.writeString(`,"dry_run":true`)
	}
	if r.Err != nil {
		w.writeString(`,"error":`)
		w.str(r.Err.Error(), w.maxField)
	}
	if w.reason != "" {
		w.writeString(`,"reason":`)
		w.str(w.reason, w.maxField)
	}
	w.writeString(`,"duration_ns":`)
	w.write(strconv.AppendInt(w.scratch[:0], r.Duration.Nanoseconds(), 10))
	if w.truncated {
		w.writeString(`,"truncated":true`)
	}
	w.writeString("}\n")
}

// capped writes what write writes, or, when that is more than max bytes,
// a marker saying how many it was.
func (w *lineWriter) capped(max int, write func()) {
	mark, limit, over := len(w.buf), w.limit, w.over
	if mark+max < w.limit {
		w.limit = mark + max
	}
	write()
	size := len(w.buf) - mark + w.over - over
	w.limit = limit
	if size <= max {
		return
	}
	w.buf, w.over, w.truncated = w.buf[:mark], over, true
	w.writeString(`"[truncated: `)
	w.write(strconv.AppendInt(w.scratch[:0], int64(size), 10))
	w.writeString(` bytes of JSON]"`)
}

func (w *lineWriter) value(v ast.Value) {
	switch v := v.(type) {
	case ast.Null:
		w.writeString("null")
	case ast.Boolean:
		w.writeString(strconv.FormatBool(bool(v)))
	case ast.Number:
		// Numbers come from JSON or from OPA's arithmetic; anything else
		// would make the line unreadable, so it goes as a string.
		if s := string(v); s != "" && (s[0] == '-' || '0' <= s[0] && s[0] <= '9') && json.Valid([]byte(s)) {
			w.writeString(s)
		} else {
			w.str(s, w.maxField)
		}
	case ast.String:
		if w.masked() {
			w.maskedHeaders = append(w.maskedHeaders, w.path[4])
			w.writeString(`"` + maskedValue + `"`)
			return
		}
		w.str(string(v), w.maxField)
	case *ast.Array:
		w.writeString("[")
		for i := range v.Len() {
			if i > 0 {
				w.writeString(",")
			}
			w.value(v.Elem(i).Value)
		}
		w.writeString("]")
	case ast.Set:
		w.writeString("[")
		for i, t := range v.Slice() {
			if i > 0 {
				w.writeString(",")
			}
			w.value(t.Value)
		}
		w.writeString("]")
	case ast.Object:
		w.object(v)
	default:
		// Not a JSON value (OPA's decisions and inputs are ground, so
		// never, in practice): its Rego text.
		w.str(v.String(), w.maxField)
	}
}

func (w *lineWriter) object(o ast.Object) {
	w.writeString("{")
	first := true
	o.Foreach(func(k, v *ast.Term) {
		if !first {
			w.writeString(",")
		}
		first = false
		// A key that is not a string (a policy's result may have one) is
		// written as its Rego text: JSON keys are strings.
		key, ok := k.Value.(ast.String)
		if !ok {
			key = ast.String(k.Value.String())
		}
		w.str(string(key), noLimit)
		w.writeString(":")
		if !w.inInput {
			w.value(v.Value)
			return
		}
		w.path = append(w.path, string(key))
		if len(w.path) == 1 && key == "parsed_body" {
			w.capped(w.maxField, func() { w.value(v.Value) })
		} else {
			w.value(v.Value)
		}
		w.path = w.path[:len(w.path)-1]
	})
	w.writeString("}")
}

// masked says whether the string being written is the value of a masked
// request header.
func (w *lineWriter) masked() bool {
	p := w.path
	return len(p) == 5 && p[0] == "attributes" && p[1] == "request" && p[2] == "http" && p[3] == "headers" && w.mask[p[4]]
}

// str writes s as a JSON string, cut to its first max bytes (at a
// character boundary) and a marker with its length when longer.
func (w *lineWriter) str(s string, max int) {
	cut := s
	if len(s) > max {
		n := max
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		cut, w.truncated = s[:n], true
	}
	b := append(w.scratch[:0], '"')
	b = appendEscaped(b, cut)
	if len(cut) < len(s) {
		b = append(b, "...[truncated: "...)
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, " bytes]"...)
	}
	b = append(b, '"')
	w.write(b)
	if cap(b) <= maxScratch {
		w.scratch = b[:0]
	}
}

// maxScratch bounds the scratch buffer kept from one string to the next.
const maxScratch = 64 << 10

const hexDigits = "0123456789abcdef"

// appendEscaped appends s escaped for a JSON string: quotes, backslashes
// and control characters escaped, invalid UTF-8 replaced by U+FFFD, and
// U+2028 and U+2029 escaped as encoding/json does (JavaScript reads them
// as line ends).
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}
