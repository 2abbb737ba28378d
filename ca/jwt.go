package ca

import (
	"crypto"
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// JWTRequest describes one JWT-SVID to mint.
type JWTRequest struct {
	ID       spiffeid.ID
	Audience []string
	TTL      time.Duration
}

// JWTSVID is a signed JWT-SVID and the claims it carries.
type JWTSVID struct {
	Token    string
	ID       spiffeid.ID
	Audience []string
	IssuedAt time.Time
	Expiry   time.Time
}

// MintJWTSVID signs a JWT-SVID (ES256, with the signing key's kid) with the
// active generation's JWT key. Its lifetime is capped at the generation's
// expiry, after which the key leaves the JWT bundle. With no valid
// generation it returns an error wrapping ErrNoValidCA.
func (a *Authority) MintJWTSVID(req JWTRequest) (*JWTSVID, error) {
	if !req.ID.MemberOf(a.td) {
		return nil, fmt.Errorf("mint JWT %s: not in trust domain %s", req.ID, a.td)
	}
	if len(req.Audience) == 0 {
		return nil, fmt.Errorf("mint JWT %s: at least one audience is required", req.ID)
	}
	if req.TTL <= 0 {
		return nil, fmt.Errorf("mint JWT %s: ttl %s must be positive", req.ID, req.TTL)
	}
	g, now, err := a.signer()
	if err != nil {
		return nil, fmt.Errorf("mint JWT %s: %w", req.ID, err)
	}
	expiry := capLifetime(now, req.TTL, g)
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: g.jwtKey, KeyID: g.jwtKID}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("mint JWT %s: %w", req.ID, err)
	}
	// JWT NumericDates are whole seconds; keep what the token says.
	issuedAt, expiry := now.Truncate(time.Second), expiry.Truncate(time.Second)
	audience := slices.Clone(req.Audience)
	token, err := jwt.Signed(signer).Claims(jwt.Claims{
		Subject:  req.ID.String(),
		Audience: jwt.Audience(audience),
		IssuedAt: jwt.NewNumericDate(issuedAt),
		Expiry:   jwt.NewNumericDate(expiry),
	}).Serialize()
	if err != nil {
		return nil, fmt.Errorf("mint JWT %s: %w", req.ID, err)
	}
	a.metrics.issuedJWT.Inc()
	return &JWTSVID{Token: token, ID: req.ID, Audience: audience, IssuedAt: issuedAt, Expiry: expiry}, nil
}

// keyID derives a JWT key ID from the public key (RFC 7638 thumbprint), so
// it is stable across restarts without being stored.
func keyID(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("JWT key id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}
