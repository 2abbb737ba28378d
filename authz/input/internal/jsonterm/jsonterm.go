// Package jsonterm parses JSON text into the ast.Term OPA would make of
// it (util.UnmarshalJSON then ast.InterfaceToValue: numbers as written,
// the last of two equal keys winning, invalid UTF-8 in strings replaced),
// within a Budget: how deep it may nest, how many values it may build,
// and a stop condition polled as it goes. A request body is the work of
// whoever sent it; parsing it must cost what the operator allows, not
// what the sender chooses.
//
// It builds terms straight from the text, with no Go map or slice of
// interface values in between, and reports how far it got when it stops.
// It never decides what a limit should be: its callers do.
package jsonterm

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// ErrTooDeep and ErrTooMany are the limits of a Budget; errors wrap them.
var (
	ErrTooDeep = errors.New("too deep")
	ErrTooMany = errors.New("too many values")
)

// pollEvery is how many values pass between two calls of Budget's stop
// function: often enough that a stop is noticed within a fraction of a
// millisecond, rarely enough to cost nothing.
const pollEvery = 1024

// Budget is what one request's documents may still cost. Several
// documents (the parts of a multipart body) may draw on one Budget. It is
// not safe for concurrent use.
type Budget struct {
	maxDepth  int
	maxValues int
	depth     int // of the container being built
	spent     int
	stop      func() error
	sincePoll int
}

// NewBudget allows documents nesting at most maxDepth arrays and objects
// (a top-level object is depth 1) and holding at most maxValues values in
// all (every scalar, array and object counts one; keys do not). stop is
// polled every so often; its error ends the work. A nil stop never stops.
func NewBudget(maxDepth, maxValues int, stop func() error) *Budget {
	return &Budget{maxDepth: maxDepth, maxValues: maxValues, stop: stop}
}

// Spent is how many values have been drawn from b.
func (b *Budget) Spent() int { return b.spent }

// Spend draws n values from b: an error wrapping ErrTooMany when that is
// more than b allows, or the stop function's error when it is time to
// poll it and it says stop.
func (b *Budget) Spend(n int) error {
	if b.spent+n > b.maxValues {
		return fmt.Errorf("%w: more than %d", ErrTooMany, b.maxValues)
	}
	b.spent += n
	if b.sincePoll += n; b.sincePoll >= pollEvery && b.stop != nil {
		b.sincePoll = 0
		return b.stop()
	}
	return nil
}

// Enter opens an array or object inside the one being built (if any): an
// error wrapping ErrTooDeep when that is deeper than b allows. Documents
// built within others (a JSON part of a multipart body, a protobuf
// Struct in a message) enter their containers first, so that the depth is
// that of the whole document.
func (b *Budget) Enter() error {
	if b.depth++; b.depth > b.maxDepth {
		return fmt.Errorf("%w: nests more than %d levels", ErrTooDeep, b.maxDepth)
	}
	return nil
}

// Leave closes the container Enter opened.
func (b *Budget) Leave() { b.depth-- }

// SyntaxError is text that is not one JSON value, and where it stops
// being one.
type SyntaxError struct {
	msg    string
	Offset int // bytes of the text read before the error
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("%s at byte %d", e.msg, e.Offset) }

// Parse is the term of the one JSON value s holds (whitespace around it
// allowed), drawing on b. An error is a *SyntaxError, an error wrapping
// ErrTooDeep or ErrTooMany, the stop function's error, or an invalid
// number as OPA refuses it (an exponent too large to represent).
func Parse(s string, b *Budget) (*ast.Term, error) {
	p := parser{s: s, b: b}
	p.space()
	t, err := p.value()
	if err != nil {
		return nil, err
	}
	if p.space(); p.i < len(p.s) {
		return nil, p.unexpected("after top-level value")
	}
	return t, nil
}

// parser reads one document. Arrays and objects collect their elements on
// stacks shared by the whole document, copied out when each one ends, and
// terms come from chunks allocated many at a time: a wide document costs
// a few allocations per container, not several per value.
type parser struct {
	s     string
	i     int
	b     *Budget
	elems []*ast.Term
	pairs [][2]*ast.Term
	terms []ast.Term
}

var (
	nullTerm  = ast.NullTerm()
	trueTerm  = ast.BooleanTerm(true)
	falseTerm = ast.BooleanTerm(false)
)

// termChunk terms are allocated at once.
const termChunk = 64

func (p *parser) term(v ast.Value) *ast.Term {
	if len(p.terms) == cap(p.terms) {
		p.terms = make([]ast.Term, 0, termChunk)
	}
	p.terms = append(p.terms, ast.Term{Value: v})
	return &p.terms[len(p.terms)-1]
}

func (p *parser) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) unexpected(context string) error {
	if p.i >= len(p.s) {
		return &SyntaxError{msg: "unexpected end of JSON input", Offset: p.i}
	}
	return &SyntaxError{msg: fmt.Sprintf("invalid character %s %s", quoteChar(p.s[p.i]), context), Offset: p.i}
}

func quoteChar(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c == '"':
		return `'"'`
	case c < 0x20 || c >= utf8.RuneSelf:
		return strconv.Quote(string(rune(c)))
	}
	return "'" + string(c) + "'"
}

func (p *parser) value() (*ast.Term, error) {
	if err := p.b.Spend(1); err != nil {
		return nil, fmt.Errorf("at byte %d: %w", p.i, err)
	}
	if p.i >= len(p.s) {
		return nil, p.unexpected("")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return p.term(ast.String(s)), nil
	case c == 't':
		return p.literal("true", trueTerm)
	case c == 'f':
		return p.literal("false", falseTerm)
	case c == 'n':
		return p.literal("null", nullTerm)
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	}
	return nil, p.unexpected("looking for beginning of value")
}

func (p *parser) literal(word string, t *ast.Term) (*ast.Term, error) {
	for j := range len(word) {
		if p.i >= len(p.s) || p.s[p.i] != word[j] {
			return nil, p.unexpected("in literal " + word)
		}
		p.i++
	}
	return t, nil
}

// number reads JSON's number grammar and keeps the text, as
// util.UnmarshalJSON's json.Number does.
func (p *parser) number() (*ast.Term, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.s) && p.s[p.i] == '0':
		p.i++
	case p.digits() == 0:
		return nil, p.unexpected("in numeric literal")
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return nil, p.unexpected("after decimal point in numeric literal")
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return nil, p.unexpected("in exponent of numeric literal")
		}
	}
	text := p.s[start:p.i]
	if t := ast.InternedIntNumberTermFromString(text); t != nil {
		return t, nil
	}
	n, err := ast.NumberChecked(text)
	if err != nil {
		return nil, err
	}
	return p.term(n), nil
}

func (p *parser) digits() int {
	start := p.i
	for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

func (p *parser) array() (*ast.Term, error) {
	if err := p.b.Enter(); err != nil {
		return nil, fmt.Errorf("at byte %d: %w", p.i, err)
	}
	p.i++ // [
	mark := len(p.elems)
	p.space()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
	} else {
		for {
			t, err := p.value()
			if err != nil {
				return nil, err
			}
			p.elems = append(p.elems, t)
			p.space()
			if p.i < len(p.s) && p.s[p.i] == ',' {
				p.i++
				p.space()
				continue
			}
			if p.i < len(p.s) && p.s[p.i] == ']' {
				p.i++
				break
			}
			return nil, p.unexpected("after array element")
		}
	}
	arr := ast.NewArray(slices.Clone(p.elems[mark:])...)
	clear(p.elems[mark:])
	p.elems = p.elems[:mark]
	p.b.Leave()
	return p.term(arr), nil
}

func (p *parser) object() (*ast.Term, error) {
	if err := p.b.Enter(); err != nil {
		return nil, fmt.Errorf("at byte %d: %w", p.i, err)
	}
	p.i++ // {
	mark := len(p.pairs)
	p.space()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
	} else {
		for {
			if p.i >= len(p.s) || p.s[p.i] != '"' {
				return nil, p.unexpected("looking for beginning of object key string")
			}
			k, err := p.str()
			if err != nil {
				return nil, err
			}
			p.space()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return nil, p.unexpected("after object key")
			}
			p.i++
			p.space()
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			p.pairs = append(p.pairs, [2]*ast.Term{p.term(ast.String(k)), v})
			p.space()
			if p.i < len(p.s) && p.s[p.i] == ',' {
				p.i++
				p.space()
				continue
			}
			if p.i < len(p.s) && p.s[p.i] == '}' {
				p.i++
				break
			}
			return nil, p.unexpected("after object key:value pair")
		}
	}
	obj := ast.NewObject(lastWins(p.pairs[mark:])...)
	clear(p.pairs[mark:])
	p.pairs = p.pairs[:mark]
	p.b.Leave()
	return p.term(obj), nil
}

// smallObject is the size up to which duplicate keys are looked for by
// comparing every pair, not through a map.
const smallObject = 16

// lastWins drops, in place, every pair whose key comes again later, as
// decoding into a Go map does; ast.NewObject expects distinct keys.
func lastWins(pairs [][2]*ast.Term) [][2]*ast.Term {
	key := func(i int) ast.String { return pairs[i][0].Value.(ast.String) }
	n := 0
	if len(pairs) <= smallObject {
	small:
		for i := range pairs {
			for j := range n {
				if key(j) == key(i) {
					pairs[j][1] = pairs[i][1]
					continue small
				}
			}
			pairs[n] = pairs[i]
			n++
		}
		return pairs[:n]
	}
	at := make(map[ast.String]int, len(pairs))
	for i := range pairs {
		if j, ok := at[key(i)]; ok {
			pairs[j][1] = pairs[i][1]
			continue
		}
		at[key(i)] = n
		pairs[n] = pairs[i]
		n++
	}
	return pairs[:n]
}

// str reads a string literal. One without escapes or invalid UTF-8 (the
// usual kind) is a slice of the text, not a copy.
func (p *parser) str() (string, error) {
	p.i++ // "
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return p.s[start : p.i-1], nil
		case c == '\\':
			return p.unquote(start)
		case c < 0x20:
			return "", p.unexpected("in string literal")
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(p.s[p.i:])
			if r == utf8.RuneError && size == 1 {
				return p.unquote(start)
			}
			p.i += size
			continue
		}
		p.i++
	}
	return "", p.unexpected("")
}

// unquote finishes a string literal begun at start that needs decoding,
// as encoding/json decodes it: escapes resolved, a surrogate pair
// combined, a lone surrogate and each byte of invalid UTF-8 replaced by
// U+FFFD.
func (p *parser) unquote(start int) (string, error) {
	buf := make([]byte, 0, p.i-start+16)
	buf = append(buf, p.s[start:p.i]...)
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return "", p.unexpected("in string literal")
		case c == '\\':
			if p.i+1 >= len(p.s) {
				p.i = len(p.s)
				return "", p.unexpected("")
			}
			p.i++
			switch e := p.s[p.i]; e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, err := p.hex4(p.i + 1)
				if err != nil {
					return "", err
				}
				p.i += 4
				if utf16.IsSurrogate(r) {
					if low, ok := p.lowSurrogate(p.i + 1); ok {
						if d := utf16.DecodeRune(r, low); d != utf8.RuneError {
							p.i += 6
							buf = utf8.AppendRune(buf, d)
							break
						}
					}
					r = utf8.RuneError
				}
				buf = utf8.AppendRune(buf, r)
			default:
				return "", p.unexpected("in string escape code")
			}
			p.i++
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			p.i++
		default:
			r, size := utf8.DecodeRuneInString(p.s[p.i:])
			if r == utf8.RuneError && size == 1 {
				buf = utf8.AppendRune(buf, utf8.RuneError)
			} else {
				buf = append(buf, p.s[p.i:p.i+size]...)
			}
			p.i += size
		}
	}
	return "", p.unexpected("")
}

// hex4 reads the four hex digits of a \u escape at i.
func (p *parser) hex4(i int) (rune, error) {
	var r rune
	for j := range 4 {
		if i+j >= len(p.s) {
			p.i = len(p.s)
			return 0, p.unexpected("")
		}
		c := p.s[i+j]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			p.i = i + j
			return 0, p.unexpected("in \\u hexadecimal character escape")
		}
		r = r<<4 | rune(c)
	}
	return r, nil
}

// lowSurrogate reads a \uXXXX escape at i without failing: encoding/json
// pairs a high surrogate only with an escape that follows at once.
func (p *parser) lowSurrogate(i int) (rune, bool) {
	if i+6 > len(p.s) || p.s[i] != '\\' || p.s[i+1] != 'u' {
		return 0, false
	}
	var r rune
	for j := i + 2; j < i+6; j++ {
		c := p.s[j]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
