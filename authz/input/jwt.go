package input

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

var (
	kValid    = ast.StringTerm("valid")
	kSubject  = ast.StringTerm("subject")
	kAudience = ast.StringTerm("audience")
	kClaims   = ast.StringTerm("claims")
	kError    = ast.StringTerm("error")
)

// jwtCacheFor bounds how long a validated token is believed without
// checking it again, so a key that leaves the bundle stops being trusted
// soon even for tokens that live longer.
const (
	jwtCacheFor  = time.Minute
	jwtCacheSize = 4096
)

// jwtValidator fills input.spiffe.jwt from an Authorization: Bearer
// JWT-SVID: its signature checked against the trust bundles, its expiry,
// and its audience against the configured ones (any one must match).
type jwtValidator struct {
	bundles   jwtbundle.Source
	audiences []string
	now       func() time.Time
	valid     cache[string, jwtEntry]
}

type jwtEntry struct {
	term  *ast.Term
	until time.Time
}

func newJWTValidator(bundles jwtbundle.Source, audiences []string, now func() time.Time) *jwtValidator {
	return &jwtValidator{bundles: bundles, audiences: audiences, now: now, valid: newCache[string, jwtEntry](jwtCacheSize)}
}

// term is input.spiffe.jwt for an Authorization header value: nil when it
// carries no JWT (so the key is absent), {"valid": false, "error": ...}
// when it carries one that does not validate.
func (v *jwtValidator) term(authorization string) *ast.Term {
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	token = strings.TrimSpace(token)
	if strings.Count(token, ".") != 2 {
		return nil // an opaque bearer token, not a JWT-SVID
	}
	now := v.now()
	if e, ok := v.valid.get(token); ok && now.Before(e.until) {
		return e.term
	}
	svid, err := jwtsvid.ParseAndValidate(token, v.bundles, v.audiences)
	if err != nil {
		return invalidJWT(err)
	}
	claims, err := jwtClaims(token)
	if err != nil {
		return invalidJWT(err)
	}
	audience := make([]*ast.Term, len(svid.Audience))
	for i, a := range svid.Audience {
		audience[i] = ast.StringTerm(a)
	}
	t := ast.ObjectTerm(
		ast.Item(kValid, trueTerm),
		ast.Item(kSubject, ast.StringTerm(svid.ID.String())),
		ast.Item(kAudience, ast.ArrayTerm(audience...)),
		ast.Item(kClaims, claims),
	)
	until := now.Add(jwtCacheFor)
	if svid.Expiry.Before(until) {
		until = svid.Expiry
	}
	v.valid.put(token, jwtEntry{term: t, until: until})
	return t
}

func invalidJWT(err error) *ast.Term {
	return ast.ObjectTerm(ast.Item(kValid, falseTerm), ast.Item(kError, ast.StringTerm(err.Error())))
}

// jwtClaims decodes the payload of a token already validated, keeping
// numbers exact (go-jose makes them float64).
func jwtClaims(token string) (*ast.Term, error) {
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("jwt payload: %w", err)
	}
	var claims any
	if err := util.UnmarshalJSON(payload, &claims); err != nil {
		return nil, fmt.Errorf("jwt payload: %w", err)
	}
	v, err := ast.InterfaceToValue(claims)
	if err != nil {
		return nil, fmt.Errorf("jwt payload: %w", err)
	}
	return ast.NewTerm(v), nil
}
