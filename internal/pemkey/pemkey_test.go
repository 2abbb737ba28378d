package pemkey

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block := func(typ string, der []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	pkcs8 := func(k any) []byte { der, err := x509.MarshalPKCS8PrivateKey(k); return block("PRIVATE KEY", der, err) }
	sec1, sec1Err := x509.MarshalECPrivateKey(ec)

	for _, tt := range []struct {
		name, pem string
		want      string // the error, or the key's type
	}{
		{"PKCS #8 EC", string(pkcs8(ec)), "*ecdsa.PrivateKey"},
		{"PKCS #8 RSA", string(pkcs8(rsaKey)), "*rsa.PrivateKey"},
		{"PKCS #8 Ed25519", string(pkcs8(ed)), "ed25519.PrivateKey"},
		{"SEC 1", string(block("EC PRIVATE KEY", sec1, sec1Err)), "*ecdsa.PrivateKey"},
		{"PKCS #1", string(block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey), nil)), "*rsa.PrivateKey"},
		{"a key after other text", "comment\n" + string(pkcs8(ec)), "*ecdsa.PrivateKey"},
		{"no PEM", "secret", "not PEM"},
		{"a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", `a PEM "CERTIFICATE" block, not a private key`},
		{"garbled", string(block("EC PRIVATE KEY", []byte("garbage"), nil)), `parse PEM "EC PRIVATE KEY" block: x509:`},
		{"a key that cannot sign", string(pkcs8(x)), "a *ecdh.PrivateKey key, which cannot sign"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Parse([]byte(tt.pem))
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				got = fmt.Sprintf("%T", k)
			}
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("Parse = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := Parse(nil); !errors.Is(err, ErrNotPEM) {
		t.Errorf("Parse(nil) = %v, want ErrNotPEM", err)
	}
}
