package ca

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestReadJWTBundle: the keys read from data_dir are the ones the CA that
// owns it signs with, across a rotation; reading changes nothing.
func TestReadJWTBundle(t *testing.T) {
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	empty, err := ReadJWTBundle(dir, td, RootSelfSigned)
	if err != nil || len(empty.JWTAuthorities()) != 0 {
		t.Fatalf("no CA yet: %v, %v; want an empty bundle", empty.JWTAuthorities(), err)
	}

	clk := &fakeClock{now: time.Now().Truncate(time.Second)}
	a := open(t, dir, clk)
	clk.now = clk.now.Add(13 * time.Hour) // past half-life: a successor is prepared
	if _, err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "ca", tmpPrefix+"x"), 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJWTBundle(dir, td, RootSelfSigned)
	if err != nil {
		t.Fatal(err)
	}
	if want := a.JWTBundle(); !got.Equal(want) || len(want.JWTAuthorities()) != 2 {
		t.Fatalf("read %d keys, the CA has %d (equal: %v)", len(got.JWTAuthorities()), len(want.JWTAuthorities()), got.Equal(want))
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", tmpPrefix+"x")); err != nil {
		t.Errorf("reading removed what Open would: %v", err)
	}
}
