package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/meshid/meshid/internal/atomicfile"
	"github.com/meshid/meshid/internal/pemkey"
)

// On-disk layout: one directory per generation, named by a sequence number
// that only grows, holding PEM files. Keys are PKCS#8, mode 0600; the
// directories 0700. A generation is written into a temporary directory and
// renamed into place, so a crash leaves a whole generation or none.
//
//	<data_dir>/ca/000001/ca.crt, ca.key, jwt.key   (self-signed)
//	<data_dir>/upstream/000001/jwt.key            (upstream files: the CA is in ca.upstream)
//	<data_dir>/upstream-authority/000001/ca.crt, ca.key, jwt.key
//	<data_dir>/upstream-authority/roots.crt       (an upstream authority: ca.crt is the
//	                                               intermediate it signed, then any above it)
const (
	certFile   = "ca.crt"
	keyFile    = "ca.key"
	jwtKeyFile = "jwt.key"
	tmpPrefix  = ".tmp-"
)

// store persists generations under dir.
type store struct {
	dir    string
	withCA bool // whether generations carry their own CA certificate (chain) and key
}

func (s store) path(name string) string { return filepath.Join(s.dir, name) }

// init creates the store's directory and its parent (data_dir), both 0700,
// and refuses either when another uid owns it or group or others may write
// to it: whoever can write there can swap the trust domain's keys. They
// may be readable (the keys are 0600 and checked on load); meshid does not
// change the mode of a directory it did not create.
func (s store) init() error {
	for _, d := range []string{filepath.Dir(s.dir), s.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create CA directory: %w", err)
		}
		if err := checkDir(d); err != nil {
			return err
		}
	}
	return nil
}

// checkDir refuses a CA directory that is not meshid's alone to write.
func checkDir(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("CA directory: %w", err)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("CA directory %s is owned by uid %d, not by meshid's uid %d; run: chown %d %s", dir, st.Uid, os.Geteuid(), os.Geteuid(), dir)
	}
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("CA directory %s has mode %04o: group or others may write to it; run: chmod 700 %s", dir, perm, dir)
	}
	return nil
}

// load reads every generation, oldest first. Leftovers of an interrupted
// write (temporary directories) are removed: they were never in use.
func (s store) load() ([]*generation, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read CA directory: %w", err)
	}
	var gens []*generation
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			os.RemoveAll(s.path(e.Name()))
			continue
		}
		if e.Name() == rootsFile && !e.IsDir() { // an upstream authority's roots, beside its generations
			continue
		}
		if _, err := strconv.Atoi(e.Name()); err != nil || !e.IsDir() {
			return nil, fmt.Errorf("%s: not a CA generation; move it out of %s", s.path(e.Name()), s.dir)
		}
		g, err := s.loadGeneration(e.Name())
		if err != nil {
			return nil, fmt.Errorf("%w (to discard this CA generation, remove %s)", err, s.path(e.Name()))
		}
		gens = append(gens, g)
	}
	slices.SortFunc(gens, func(a, b *generation) int { return strings.Compare(a.name, b.name) })
	return gens, nil
}

func (s store) loadGeneration(name string) (*generation, error) {
	dir := s.path(name)
	g := &generation{name: name}
	var err error
	if g.jwtKey, err = readKey(filepath.Join(dir, jwtKeyFile)); err != nil {
		return nil, err
	}
	if g.jwtKID, err = keyID(g.jwtKey.Public()); err != nil {
		return nil, err
	}
	if !s.withCA {
		return g, nil
	}
	if g.key, err = readKey(filepath.Join(dir, keyFile)); err != nil {
		return nil, err
	}
	if g.chain, err = readCerts(filepath.Join(dir, certFile)); err != nil {
		return nil, err
	}
	return g, nil
}

// save writes g as the newest generation and returns its name.
func (s store) save(g *generation) (string, error) {
	jwtPEM, err := keyPEM(g.jwtKey)
	if err != nil {
		return "", err
	}
	files := []file{{jwtKeyFile, jwtPEM, 0o600}}
	if s.withCA {
		caPEM, err := keyPEM(g.key)
		if err != nil {
			return "", err
		}
		files = append(files, file{keyFile, caPEM, 0o600}, file{certFile, certPEM(g.chain...), 0o644})
	}
	name, err := s.write(files)
	if err != nil {
		return "", fmt.Errorf("write CA generation into %s: %w (check that data_dir %s is writable by uid %d and has free space)", s.dir, err, filepath.Dir(s.dir), os.Geteuid())
	}
	return name, nil
}

type file struct {
	name string
	data []byte
	mode os.FileMode
}

// write puts files into a new generation directory. Its errors name the
// step and the system's reason, never the temporary directory's random
// name: a failure that repeats every second then reads the same each time.
func (s store) write(files []file) (string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return "", fmt.Errorf("read the directory: %w", cause(err))
	}
	next := 1
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n >= next {
			next = n + 1
		}
	}
	name := fmt.Sprintf("%06d", next)

	tmp, err := os.MkdirTemp(s.dir, tmpPrefix)
	if err != nil {
		return "", fmt.Errorf("create a temporary directory: %w", cause(err))
	}
	defer os.RemoveAll(tmp) // no-op after a successful rename
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(tmp, f.name), f.data, f.mode); err != nil {
			return "", fmt.Errorf("write %s: %w", f.name, cause(err))
		}
	}
	final := s.path(name)
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("rename into %s: %w", name, cause(err))
	}
	// Until the store's directory is flushed, a crash may lose the rename:
	// take the generation back rather than sign with one the disk may
	// forget.
	if err := atomicfile.SyncDir(s.dir); err != nil {
		os.RemoveAll(final)
		return "", fmt.Errorf("flush the directory: %w", cause(err))
	}
	return name, nil
}

// cause returns the innermost error: the system's reason, without the
// paths the layers above it added.
func cause(err error) error {
	for {
		inner := errors.Unwrap(err)
		if inner == nil {
			return err
		}
		err = inner
	}
}

func (s store) remove(name string) error { return os.RemoveAll(s.path(name)) }

// readKey reads a private key file, refusing one that others can read.
func readKey(path string) (crypto.Signer, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("CA key %s has mode %04o: it must not be readable by group or others; run: chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	key, err := pemkey.Parse(data)
	if errors.Is(err, pemkey.ErrNotPEM) {
		return nil, fmt.Errorf("%s: no PEM private key block", path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// readCerts reads a CA certificate, followed by any intermediates above
// it.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return slices.Clip(certs), nil
}

// parseCerts parses every CERTIFICATE block of a PEM file, in order.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
