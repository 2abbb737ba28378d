// Package pemkey reads a private key from PEM in each of the encodings
// the tools that make keys write: PKCS #8, SEC 1 (EC) and PKCS #1 (RSA).
// The CA's upstream root key and the bundle signing key of `meshid policy
// build` both come from such tools.
package pemkey

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrNotPEM is the error for data that holds no PEM block at all, for
// callers that know what else the data might be.
var ErrNotPEM = errors.New("not PEM")

// Parse reads the first PEM block of data as a private key that can sign.
func Parse(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, ErrNotPEM
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("a PEM %q block, not a private key (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse PEM %q block: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T key, which cannot sign", key)
	}
	return signer, nil
}
