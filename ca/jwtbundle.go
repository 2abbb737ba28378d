package ca

import (
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Root is how a CA is rooted, which decides where in data_dir it keeps its
// generations.
type Root int

const (
	RootSelfSigned        Root = iota // a self-signed root of its own
	RootUpstreamFiles                 // an intermediate from files (Options.Upstream)
	RootUpstreamAuthority             // intermediates an upstream authority signs (Options.UpstreamAuthority)
)

// generationsDir is where a CA rooted so keeps its generations.
func generationsDir(dataDir string, root Root) string {
	switch root {
	case RootUpstreamFiles:
		return filepath.Join(dataDir, "upstream")
	case RootUpstreamAuthority:
		return filepath.Join(dataDir, "upstream-authority")
	default:
		return filepath.Join(dataDir, "ca")
	}
}

// ReadJWTBundle reads the JWT keys of the CA generations in dir (data_dir,
// of a CA rooted so) without
// creating, rotating or removing anything: what `meshid policy eval`
// validates JWT-SVIDs with, the keys a node running on dir signs with.
// Generations past their expiry are read too: a JWT-SVID never outlives
// the generation that signed it, so their keys validate only expired
// tokens, which fail on their own expiry. A dir with no CA yet is an
// empty bundle.
func ReadJWTBundle(dir string, td spiffeid.TrustDomain, root Root) (*jwtbundle.Bundle, error) {
	s := store{dir: generationsDir(dir, root)}
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return jwtbundle.New(td), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read CA directory: %w", err)
	}
	keys := map[string]crypto.PublicKey{}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || !e.IsDir() || strings.HasPrefix(e.Name(), tmpPrefix) {
			continue // Open reports or removes these; reading is not the place
		}
		key, err := readKey(filepath.Join(s.path(e.Name()), jwtKeyFile))
		if err != nil {
			return nil, err
		}
		kid, err := keyID(key.Public())
		if err != nil {
			return nil, err
		}
		keys[kid] = key.Public()
	}
	return jwtbundle.FromJWTAuthorities(td, keys), nil
}
