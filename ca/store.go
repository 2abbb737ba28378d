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
)

// On-disk layout: one directory per generation, named by a sequence number
// that only grows, holding PEM files. Keys are PKCS#8, mode 0600; the
// directories 0700. A generation is written into a temporary directory and
// renamed into place, so a crash leaves a whole generation or none.
//
//	<data_dir>/ca/000001/ca.crt, ca.key, jwt.key   (self-signed)
//	<data_dir>/upstream/000001/jwt.key            (upstream: the CA is in ca.upstream)
const (
	certFile   = "ca.crt"
	keyFile    = "ca.key"
	jwtKeyFile = "jwt.key"
	tmpPrefix  = ".tmp-"
)

// store persists generations under dir.
type store struct {
	dir        string
	selfSigned bool // whether generations carry their own CA certificate and key
}

func (s store) path(name string) string { return filepath.Join(s.dir, name) }

// init creates the store's directory and its parent (data_dir), both 0700.
func (s store) init() error {
	for _, d := range []string{filepath.Dir(s.dir), s.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create CA directory: %w", err)
		}
		// MkdirAll keeps an existing directory's mode; CA keys need 0700.
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("restrict CA directory: %w", err)
		}
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
	if !s.selfSigned {
		return g, nil
	}
	if g.key, err = readKey(filepath.Join(dir, keyFile)); err != nil {
		return nil, err
	}
	cert, err := readCert(filepath.Join(dir, certFile))
	if err != nil {
		return nil, err
	}
	g.chain = []*x509.Certificate{cert}
	return g, nil
}

// save writes g as the newest generation and returns its name.
func (s store) save(g *generation) (string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return "", fmt.Errorf("read CA directory: %w", err)
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
		return "", fmt.Errorf("write CA generation: %w", err)
	}
	defer os.RemoveAll(tmp) // no-op after a successful rename

	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	jwtPEM, err := keyPEM(g.jwtKey)
	if err != nil {
		return "", err
	}
	files := []file{{jwtKeyFile, jwtPEM, 0o600}}
	if s.selfSigned {
		caPEM, err := keyPEM(g.key)
		if err != nil {
			return "", err
		}
		files = append(files, file{keyFile, caPEM, 0o600}, file{certFile, certPEM(g.cert()), 0o644})
	}
	for _, f := range files {
		if err := writeSynced(filepath.Join(tmp, f.name), f.data, f.mode); err != nil {
			return "", err
		}
	}
	if err := os.Rename(tmp, s.path(name)); err != nil {
		return "", fmt.Errorf("write CA generation: %w", err)
	}
	return name, nil
}

func (s store) remove(name string) error { return os.RemoveAll(s.path(name)) }

// writeSynced writes a new file with mode and flushes it to disk.
func writeSynced(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

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
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs[0], nil
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

// parseKey accepts PKCS#8, SEC 1 (EC) and PKCS#1 (RSA) keys: upstream roots
// come from other tools.
func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key block")
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
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", key)
	}
	return signer, nil
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
