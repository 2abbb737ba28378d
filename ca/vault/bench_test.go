package vault_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"

	"github.com/meshid/meshid/ca/vault"
	"github.com/meshid/meshid/test/harness"
)

// BenchmarkEngine measures what one meshid node asks of a real OpenBao on
// loopback (docs/scaling.md): having an intermediate signed, and reading
// the mount's roots, against the engine's cheapest authenticated call
// (a token lookup of itself) as the baseline of the same run. "parallel"
// is many nodes at once, each with its own client.
func BenchmarkEngine(b *testing.B) {
	bao := harness.OpenBaoForTest(b, harness.OpenBaoOptions{TLS: true})
	tokenFile, err := bao.Token(b.Context(), "meshid", harness.MeshidPolicy(bao.Mount)+`path "auth/token/lookup-self" { capabilities = ["read"] }`, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	newClient := func() *vault.Client {
		c, err := vault.New(vault.Options{Address: bao.Address, CAFile: bao.CAFile, TokenFile: tokenFile})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	csr := benchCSR(b)
	var baseline float64 // ns per lookup-self
	perOp := func(b *testing.B) float64 { return float64(b.Elapsed().Nanoseconds()) / float64(b.N) }
	ratio := func(b *testing.B) {
		if baseline > 0 {
			b.ReportMetric(perOp(b)/baseline, "x-baseline")
		}
	}

	b.Run("baseline-lookup-self", func(b *testing.B) {
		c := newClient()
		for b.Loop() {
			if err := c.LookupSelf(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
		baseline = perOp(b)
	})
	b.Run("roots", func(b *testing.B) {
		c := newClient()
		for b.Loop() {
			if _, err := c.Roots(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b)
	})
	b.Run("sign-intermediate", func(b *testing.B) {
		c := newClient()
		for b.Loop() {
			if _, err := c.SignIntermediate(b.Context(), csr, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b)
	})
	b.Run("sign-intermediate-parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			c := newClient()
			for pb.Next() {
				if _, err := c.SignIntermediate(context.Background(), csr, time.Hour); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
	})
}

func benchCSR(b *testing.B) []byte {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	u, _ := url.Parse("spiffe://example.org")
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "example.org intermediate CA"}, URIs: []*url.URL{u}}, key)
	if err != nil {
		b.Fatal(err)
	}
	return csr
}
