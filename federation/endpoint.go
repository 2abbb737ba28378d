// Package federation exchanges trust bundles with other trust domains over
// SPIFFE bundle endpoints (the SPIFFE Trust Domain and Bundle
// specification): Endpoint serves this trust domain's bundle, Fetcher keeps
// one other domain's bundle fresh from its endpoint and persisted, so that
// a restart, or an endpoint that is down, loses nothing.
//
// The wire format, the handler and the authenticated fetch are go-spiffe's
// federation package; this package adds what a daemon needs around them:
// sequence numbers that survive restarts, certificates that rotate, a
// refresh schedule, persistence and the last-good rule.
package federation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/internal/atomicfile"
)

// BundleSource is this trust domain's CA: its bundles as of now.
type BundleSource interface {
	X509Bundle() *x509bundle.Bundle
	JWTBundle() *jwtbundle.Bundle
}

// EndpointOptions configures an Endpoint. Exactly one of SVID (the
// https_spiffe profile) and CertFile+KeyFile (https_web) is set.
type EndpointOptions struct {
	TrustDomain spiffeid.TrustDomain
	Source      BundleSource
	// RefreshHint is served as spiffe_refresh_hint.
	RefreshHint time.Duration
	// SVID is meshid's own SVID, renewed by its owner.
	SVID x509svid.Source
	// CertFile and KeyFile are a web PKI certificate chain and its key,
	// read again whenever either file changes.
	CertFile, KeyFile string
	// StateFile keeps the sequence number across restarts.
	StateFile string
	Log       *slog.Logger
}

// Endpoint serves this trust domain's SPIFFE bundle: every X.509 root and
// JWT key the CA publishes now, with a spiffe_sequence that grows by one
// whenever that content changes, restarts included.
type Endpoint struct {
	o       EndpointOptions
	handler http.Handler
	tls     *tls.Config

	mu    sync.Mutex
	state endpointState

	certMu   sync.Mutex
	cert     *tls.Certificate
	certStat [2]fileStamp
}

// endpointState is what StateFile holds.
type endpointState struct {
	Sequence uint64 `json:"sequence"`
	Digest   string `json:"digest"` // of the bundle content that sequence numbers
}

// NewEndpoint checks o and reads the sequence state and, for https_web,
// the certificate.
func NewEndpoint(o EndpointOptions) (*Endpoint, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	e := &Endpoint{o: o}
	switch {
	case o.SVID != nil && o.CertFile == "":
		e.tls = tlsconfig.TLSServerConfig(o.SVID)
	case o.SVID == nil && o.CertFile != "" && o.KeyFile != "":
		if _, err := e.certificate(nil); err != nil {
			return nil, err
		}
		e.tls = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: e.certificate}
	default:
		return nil, errors.New("federation: a bundle endpoint needs either meshid's SVID (https_spiffe) or a certificate and key file (https_web)")
	}
	if data, err := os.ReadFile(o.StateFile); err == nil {
		if err := json.Unmarshal(data, &e.state); err != nil {
			return nil, fmt.Errorf("federation: bundle endpoint state %s: %w (remove it to start the sequence again)", o.StateFile, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("federation: bundle endpoint state: %w", err)
	}
	h, err := federation.NewHandler(o.TrustDomain, e)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	e.handler = h
	return e, nil
}

// Handler serves the bundle on every path, as a GET.
func (e *Endpoint) Handler() http.Handler { return e.handler }

// Serve serves HTTPS on lis until ctx ends.
func (e *Endpoint) Serve(ctx context.Context, lis net.Listener) error {
	srv := &http.Server{
		Handler:           e.handler,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(e.o.Log.Handler(), slog.LevelDebug),
	}
	tlsLis := tls.NewListener(lis, e.tls)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tlsLis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("federation: bundle endpoint: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	return nil
}

// GetBundleForTrustDomain makes the Endpoint the handler's source: the
// CA's bundles now, numbered.
func (e *Endpoint) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td != e.o.TrustDomain {
		return nil, fmt.Errorf("federation: no bundle for %q", td)
	}
	b := spiffebundle.New(td)
	b.SetX509Authorities(e.o.Source.X509Bundle().X509Authorities())
	b.SetJWTAuthorities(e.o.Source.JWTBundle().JWTAuthorities())
	b.SetRefreshHint(e.o.RefreshHint)
	seq, err := e.sequence(b)
	if err != nil {
		return nil, err
	}
	b.SetSequenceNumber(seq)
	return b, nil
}

// sequence returns the sequence number of b's content: the last one if
// the content is the same, else the next, persisted before it is served
// so that no restart hands out a number twice for different content.
func (e *Endpoint) sequence(b *spiffebundle.Bundle) (uint64, error) {
	digest, err := contentDigest(b)
	if err != nil {
		return 0, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if digest == e.state.Digest {
		return e.state.Sequence, nil
	}
	next := endpointState{Sequence: e.state.Sequence + 1, Digest: digest}
	data, err := json.Marshal(next)
	if err != nil {
		return 0, err
	}
	if err := atomicfile.Write(e.o.StateFile, data, 0o600); err != nil {
		return 0, fmt.Errorf("federation: persist bundle sequence: %w", err)
	}
	e.state = next
	e.o.Log.Info("federation: bundle endpoint serves a new bundle", "sequence", next.Sequence,
		"x509_roots", len(b.X509Authorities()), "jwt_keys", len(b.JWTAuthorities()))
	return next.Sequence, nil
}

// contentDigest hashes what the bundle trusts, independent of order and of
// the refresh hint and sequence number.
func contentDigest(b *spiffebundle.Bundle) (string, error) {
	h := sha256.New()
	roots := b.X509Authorities()
	ders := make([][]byte, len(roots))
	for i, c := range roots {
		ders[i] = c.Raw
	}
	slices.SortFunc(ders, bytes.Compare)
	for _, der := range ders {
		fmt.Fprintf(h, "x509 %d\n", len(der))
		h.Write(der)
	}
	keys := b.JWTAuthorities()
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		der, err := x509.MarshalPKIXPublicKey(keys[id])
		if err != nil {
			return "", fmt.Errorf("federation: JWT key %q: %w", id, err)
		}
		fmt.Fprintf(h, "jwt %q %d\n", id, len(der))
		h.Write(der)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// certificate is https_web's GetCertificate: the key pair as last read,
// read again once either file changed. A pair that no longer loads (a
// renewal half written) keeps the previous one, and says so.
func (e *Endpoint) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	e.certMu.Lock()
	defer e.certMu.Unlock()
	certStamp, err1 := stamp(e.o.CertFile)
	keyStamp, err2 := stamp(e.o.KeyFile)
	now := [2]fileStamp{certStamp, keyStamp}
	if e.cert != nil && (err1 != nil || err2 != nil || now == e.certStat) {
		return e.cert, nil
	}
	pair, err := tls.LoadX509KeyPair(e.o.CertFile, e.o.KeyFile)
	if err != nil {
		err = fmt.Errorf("federation: bundle endpoint certificate %s, key %s: %w", e.o.CertFile, e.o.KeyFile, err)
		if e.cert == nil {
			return nil, err
		}
		e.o.Log.Warn("federation: keeping the previous bundle endpoint certificate", "err", err)
		e.certStat = now
		return e.cert, nil
	}
	e.cert, e.certStat = &pair, now
	return e.cert, nil
}
