package bundles

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/internal/atomicfile"
	"github.com/meshid/meshid/internal/config"
)

// The files of a kept bundle, in data_dir/bundles/<name>/.
const (
	keptBundle = "bundle.tar.gz"
	keptMeta   = "bundle.json"
)

// kept is what bundle.json says of the kept bundle. Its ETag is sent at
// start only if SHA256 is the tarball's and Source is where the bundle
// is configured to come from now: an ETag stands for a body at an
// address, and a 304 for the wrong one would keep a stale copy in force.
type kept struct {
	ETag       string    `json:"etag"`
	Revision   string    `json:"revision"`
	SHA256     string    `json:"sha256"` // of bundle.tar.gz, hex
	Source     string    `json:"source"` // the address it was downloaded from
	Downloaded time.Time `json:"downloaded"`
}

// keep writes the activated bundle's bytes and its bundle.json, each
// atomically; the tarball first, so that a crash between the two leaves a
// bundle.json of an older tarball, whose ETag is then not sent: one
// download.
func (s *source) keep(raw []byte, etag, revision string, downloaded time.Time) error {
	if len(raw) == 0 {
		return errors.New("no bundle bytes to keep")
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.dir, keptBundle), raw, 0o600); err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	return s.keepMeta(kept{ETag: etag, Revision: revision, SHA256: hex.EncodeToString(sum[:]), Source: s.address(), Downloaded: downloaded})
}

// keepMeta writes bundle.json alone, for the kept bundle answered under
// a new ETag.
func (s *source) keepMeta(k kept) error {
	meta, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.dir, keptMeta), append(meta, '\n'), 0o600)
}

// loadKept reads, verifies and activates the kept copy, if there is one.
func (s *source) loadKept(ctx context.Context) {
	path := filepath.Join(s.dir, keptBundle)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	now := s.now()
	if err != nil {
		s.fail(now, ReasonVerify, fmt.Errorf("bundle %s kept in %s: %w", s.cfg.Name, path, err))
		return
	}
	var k kept
	if meta, err := os.ReadFile(filepath.Join(s.dir, keptMeta)); err == nil {
		// Without it the bundle is still good; only the ETag is lost.
		_ = json.Unmarshal(meta, &k)
	}
	b, err := s.read(raw)
	if err != nil {
		s.fail(now, ReasonVerify, fmt.Errorf("bundle %s kept in %s is refused (verified with the current signing settings): %w", s.cfg.Name, path, err))
		return
	}
	if err := s.act.Activate(ctx, authz.Bundle{Name: s.cfg.Name, Bundle: b}); err != nil {
		s.fail(now, ReasonCompile, fmt.Errorf("bundle %s kept in %s, revision %q, refused: %w", s.cfg.Name, path, b.Manifest.Revision, err))
		return
	}
	sum := sha256.Sum256(raw)
	switch {
	case k.ETag == "":
	case k.SHA256 != hex.EncodeToString(sum[:]):
		k.ETag = "" // bundle.json is another tarball's: download again
	case k.Source != s.address():
		s.log.Info("authz: the kept bundle came from another address; it is in force until this one answers, which is asked without its ETag",
			"kept_from", k.Source, "now_from", s.address())
		k.ETag = ""
	}
	s.activated(now, b.Manifest.Revision, k.ETag, raw, true)
	s.mu.Lock()
	s.keptAt = k.Downloaded
	s.mu.Unlock()
}

// read reads a bundle tarball as the downloader does: verified, within
// the size limit, parsed with the configured Rego version.
func (s *source) read(raw []byte) (*bundle.Bundle, error) {
	loader := bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(raw), "").WithSizeLimitBytes(s.cfg.SizeLimitBytes)
	b, err := bundle.NewCustomReader(loader).
		WithBundleVerificationConfig(s.verify).
		WithRegoVersion(s.version).
		WithSizeLimitBytes(s.cfg.SizeLimitBytes).
		WithBundleName(s.cfg.Name).
		Read()
	if err != nil {
		return nil, err
	}
	if b.Type() == bundle.DeltaBundleType {
		return nil, errors.New("a delta bundle: meshid activates snapshot bundles only")
	}
	return &b, nil
}

// ReadKept reads and verifies the copy of b that a node with data_dir
// dataDir keeps, as that node would at start, for commands that decide
// as the node does without running it (`meshid policy eval --config`).
func ReadKept(b config.Bundle, dataDir string, version ast.RegoVersion) (authz.Bundle, error) {
	s := &source{cfg: b, dir: filepath.Join(dataDir, "bundles", b.Name), version: version}
	if b.Signing != nil {
		var err error
		if s.verify, err = verificationConfig(*b.Signing); err != nil {
			return authz.Bundle{}, fmt.Errorf("bundle %s: signing: %w", b.Name, err)
		}
	}
	path := filepath.Join(s.dir, keptBundle)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return authz.Bundle{}, fmt.Errorf("bundle %s: no copy kept in %s: meshid run has not activated one yet", b.Name, s.dir)
	}
	if err != nil {
		return authz.Bundle{}, fmt.Errorf("bundle %s: %w", b.Name, err)
	}
	bb, err := s.read(raw)
	if err != nil {
		return authz.Bundle{}, fmt.Errorf("bundle %s kept in %s is refused: %w", b.Name, path, err)
	}
	return authz.Bundle{Name: b.Name, Bundle: bb}, nil
}
