package input

import (
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// pathTerms are parsed_path and parsed_query of one request path.
type pathTerms struct{ path, query *ast.Term }

func (b *Builder) parsedPath(path string) (pathTerms, error) {
	if path == "" || path == "/" {
		return rootPathTerms, nil
	}
	if pt, ok := b.paths.get(path); ok {
		return pt, nil
	}
	pt, err := parsePath(path)
	if err != nil {
		return pathTerms{}, err
	}
	if len(path) <= maxCachedPath {
		b.paths.put(path, pt)
	}
	return pt, nil
}

// parsePath splits the request path as the plugin does: segments of the
// unescaped path without its leading slashes ("/" is [""]), and the query
// as a map of value lists, bytes that are not UTF-8 passed on as they are.
// A malformed escape or query is an error, not a guess.
func parsePath(path string) (pathTerms, error) {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	unescaped, err := url.PathUnescape(rawPath)
	if err != nil {
		return pathTerms{}, err
	}
	var segments []*ast.Term
	for s := range strings.SplitSeq(strings.TrimLeft(unescaped, "/"), "/") {
		segments = append(segments, ast.StringTerm(s))
	}
	query, err := queryTerm(rawQuery)
	if err != nil {
		return pathTerms{}, err
	}
	return pathTerms{path: ast.ArrayTerm(segments...), query: query}, nil
}

// queryTerm parses the query of a request path into a map of value lists.
func queryTerm(raw string) (*ast.Term, error) {
	values, err := url.ParseQuery(raw)
	if err != nil {
		return nil, err
	}
	pairs := make([][2]*ast.Term, 0, len(values))
	for k, vs := range values {
		list := make([]*ast.Term, len(vs))
		for i, v := range vs {
			list[i] = ast.StringTerm(v)
		}
		pairs = append(pairs, ast.Item(ast.StringTerm(k), ast.ArrayTerm(list...)))
	}
	return ast.ObjectTerm(pairs...), nil
}
