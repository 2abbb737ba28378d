package input

import (
	"sync"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// arena builds one input document with few allocations: terms come from
// chunks allocated many at a time, and objects are collected on a shared
// stack of key-value pairs that ast.NewObject copies out of.
//
// Terms handed out belong to the document for good (OPA, the decision log
// and the caches may keep them), so a chunk is never reused; only the pair
// stack is, through a sync.Pool.
type arena struct {
	terms []ast.Term
	pairs [][2]*ast.Term
}

// termChunk is about what one request's document needs outside the caches.
const termChunk = 16

var arenas = sync.Pool{New: func() any { return &arena{pairs: make([][2]*ast.Term, 0, 64)} }}

func getArena() *arena { return arenas.Get().(*arena) }

func putArena(a *arena) {
	a.terms = nil
	clear(a.pairs[:cap(a.pairs)]) // drop references to terms of a finished document
	a.pairs = a.pairs[:0]
	arenas.Put(a)
}

func (a *arena) term(v ast.Value) *ast.Term {
	if len(a.terms) == cap(a.terms) {
		a.terms = make([]ast.Term, 0, termChunk)
	}
	a.terms = append(a.terms, ast.Term{Value: v})
	return &a.terms[len(a.terms)-1]
}

func (a *arena) str(s string) *ast.Term { return a.term(ast.String(s)) }

func (a *arena) checkedStr(s string) (*ast.Term, error) {
	if !utf8.ValidString(s) {
		return nil, errInvalidUTF8
	}
	return a.str(s), nil
}

// begin starts an object; add its pairs, then end it with the returned mark.
// Objects nest: a value built between two adds is ended before its pair
// is added, so the stack is back at the parent's pairs by then.
func (a *arena) begin() int { return len(a.pairs) }

func (a *arena) add(k, v *ast.Term) { a.pairs = append(a.pairs, [2]*ast.Term{k, v}) }

func (a *arena) endValue(mark int) ast.Value {
	obj := ast.NewObject(a.pairs[mark:]...)
	a.pairs = a.pairs[:mark]
	return obj
}

func (a *arena) end(mark int) *ast.Term { return a.term(a.endValue(mark)) }
