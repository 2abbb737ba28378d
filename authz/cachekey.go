package authz

import (
	"encoding/binary"

	"github.com/open-policy-agent/opa/v1/ast"
)

// keyPaths are reads.paths as terms, built once.
func keyPaths(paths [][]string) [][]*ast.Term {
	out := make([][]*ast.Term, len(paths))
	for i, p := range paths {
		for _, k := range p {
			out[i] = append(out[i], ast.StringTerm(k))
		}
	}
	return out
}

// appendKey appends to buf the cache key of input for a policy reading
// paths: for each path in turn, the value there in a canonical encoding.
// The encoding is injective (every value is tagged with its type and every
// string and collection with its length), so two inputs have the same key
// only when every part of them the policy can read is the same.
func appendKey(buf []byte, input ast.Value, paths [][]*ast.Term) []byte {
	for _, path := range paths {
		buf = appendAt(buf, input, path)
	}
	return buf
}

// Tags of the encoding.
const (
	tagMissing = 'x' // no such key: the read is undefined
	tagStop    = 'p' // a value that is not an object on the way, then its depth and the value
	tagNull    = 'n'
	tagFalse   = 'f'
	tagTrue    = 't'
	tagNumber  = 'd'
	tagString  = 's'
	tagArray   = 'a'
	tagObject  = 'o'
	tagSet     = 'S'
	tagOther   = '?'
)

// appendAt encodes the value at path. A path through something that is
// not an object ends there with that whole value: a set, say, answers a
// key as a membership test.
func appendAt(buf []byte, v ast.Value, path []*ast.Term) []byte {
	for i, key := range path {
		obj, ok := v.(ast.Object)
		if !ok {
			buf = append(buf, tagStop)
			buf = binary.AppendUvarint(buf, uint64(i))
			return appendValue(buf, v)
		}
		t := obj.Get(key)
		if t == nil {
			return append(buf, tagMissing)
		}
		v = t.Value
	}
	return appendValue(buf, v)
}

func appendString(buf []byte, tag byte, s string) []byte {
	buf = append(buf, tag)
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// appendValue encodes v canonically: numbers by their text (1 and 1.0 are
// two keys, never one), objects in key order, sets sorted.
func appendValue(buf []byte, v ast.Value) []byte {
	switch v := v.(type) {
	case ast.Null:
		return append(buf, tagNull)
	case ast.Boolean:
		if v {
			return append(buf, tagTrue)
		}
		return append(buf, tagFalse)
	case ast.Number:
		return appendString(buf, tagNumber, string(v))
	case ast.String:
		return appendString(buf, tagString, string(v))
	case *ast.Array:
		buf = append(buf, tagArray)
		buf = binary.AppendUvarint(buf, uint64(v.Len()))
		for i := range v.Len() {
			buf = appendValue(buf, v.Elem(i).Value)
		}
		return buf
	case ast.Object:
		buf = append(buf, tagObject)
		buf = binary.AppendUvarint(buf, uint64(v.Len()))
		for _, k := range v.Keys() { // in key order; no closure, which would put buf on the heap
			buf = appendValue(buf, k.Value)
			buf = appendValue(buf, v.Get(k).Value)
		}
		return buf
	case ast.Set:
		buf = append(buf, tagSet)
		buf = binary.AppendUvarint(buf, uint64(v.Len()))
		sorted := v.Sorted()
		for i := range sorted.Len() {
			buf = appendValue(buf, sorted.Elem(i).Value)
		}
		return buf
	default:
		// Input is built from data only; anything else is keyed by its
		// text, which is what OPA compares it by.
		return appendString(buf, tagOther, v.String())
	}
}
