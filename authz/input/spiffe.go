package input

import (
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// idKey identifies one described SPIFFE ID: the same ID reached over mTLS
// or through XFCC is described differently.
type idKey struct {
	id  string
	via *ast.Term
}

// spiffe is input.spiffe: who is calling (source), who is called
// (destination) and the JWT-SVID the request carries (jwt).
func (b *Builder) spiffe(a *arena, attrs *authv3.AttributeContext) *ast.Term {
	headers := attrs.GetRequest().GetHttp().GetHeaders()
	source, via := attrs.GetSource().GetPrincipal(), viaMTLS
	if b.xfcc != nil {
		if id, ok := b.xfcc.source(source, headers["x-forwarded-client-cert"]); ok {
			source, via = id, viaXFCC
		}
	}
	var jwt *ast.Term
	if b.jwt != nil {
		jwt = b.jwt.term(headers["authorization"])
	}
	// Without a JWT the whole object depends on two IDs only: share it.
	key := spiffeKey{source: source, via: via, destination: attrs.GetDestination().GetPrincipal()}
	if jwt == nil {
		if t, ok := b.spiffes.get(key); ok {
			return t
		}
	}
	pairs := make([][2]*ast.Term, 0, 3)
	if t := b.idTerm(source, via); t != nil {
		pairs = append(pairs, ast.Item(kSource, t))
	}
	if t := b.idTerm(key.destination, nil); t != nil {
		pairs = append(pairs, ast.Item(kDestination, t))
	}
	if jwt != nil {
		return a.term(ast.NewObject(append(pairs, ast.Item(kJWT, jwt))...))
	}
	t := ast.ObjectTerm(pairs...)
	b.spiffes.put(key, t)
	return t
}

// spiffeKey identifies an input.spiffe without a JWT.
type spiffeKey struct {
	source      string
	via         *ast.Term
	destination string
}

// idTerm describes a principal that is a SPIFFE ID, nil for anything else
// (absent, or a certificate subject): the policy decides what an
// unidentified caller may do.
func (b *Builder) idTerm(principal string, via *ast.Term) *ast.Term {
	if principal == "" {
		return nil
	}
	key := idKey{principal, via}
	if t, ok := b.ids.get(key); ok {
		return t
	}
	id, err := spiffeid.FromString(principal)
	if err != nil {
		return nil
	}
	t := idDocument(id, via)
	b.ids.put(key, t)
	return t
}

func idDocument(id spiffeid.ID, via *ast.Term) *ast.Term {
	segments := []*ast.Term{}
	if p := id.Path(); p != "" {
		for s := range strings.SplitSeq(p[1:], "/") {
			segments = append(segments, ast.StringTerm(s))
		}
	}
	pairs := [][2]*ast.Term{
		ast.Item(kID, ast.StringTerm(id.String())),
		ast.Item(kTrustDomain, ast.StringTerm(id.TrustDomain().Name())),
		ast.Item(kPath, ast.StringTerm(id.Path())),
		ast.Item(kSegments, ast.ArrayTerm(segments...)),
	}
	if via != nil {
		pairs = append(pairs, ast.Item(kVia, via))
	}
	return ast.ObjectTerm(pairs...)
}
