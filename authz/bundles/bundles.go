// Package bundles keeps the OPA bundles of authz.bundles: it downloads
// each from its bundle service with OPA's own downloader (ETag and
// If-None-Match, long polling, backoff), has OPA's bundle reader verify
// its signature (required unless the source says unsigned), keeps the
// last activated copy in data_dir/bundles/<name>/ and reads it back,
// verified again, at start. It hands every verified bundle to an
// Activator, which compiles it with the other sources; it never compiles
// or decides itself, and knows nothing of the policy dir.
package bundles

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/remote"
)

// Activator compiles a verified bundle with the other policy sources and
// puts the result in use, or refuses it with the reason
// (authz.Activator).
type Activator interface {
	Activate(ctx context.Context, b authz.Bundle) error
}

// Options configure a Manager.
type Options struct {
	Bundles []config.Bundle
	// DataDir holds the kept copies, DataDir/bundles/<name>/.
	DataDir     string
	RegoVersion ast.RegoVersion
	Activator   Activator
	Log         *slog.Logger
	Metrics     prometheus.Registerer
	// Now is the clock of the status times; nil: time.Now.
	Now func() time.Time
}

// The reasons of a failure, as status and metrics name them.
const (
	ReasonDownload = "download" // the service did not answer with a bundle: network, HTTP status, timeout
	ReasonVerify   = "verify"   // not a bundle, signature refused, too large, delta
	ReasonCompile  = "compile"  // refused by the activator: Rego errors, roots, decision undefined
	ReasonPersist  = "persist"  // activated, but not written to disk
)

// Manager keeps the configured bundles.
type Manager struct {
	sources []*source
	log     *slog.Logger
	metrics *metrics
}

// source is one configured bundle and its state.
type source struct {
	cfg     config.Bundle
	dir     string // DataDir/bundles/<name>
	client  rest.Client
	verify  *bundle.VerificationConfig // nil for an unsigned source
	version ast.RegoVersion
	act     Activator
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	d *download.Downloader // set by Run before it starts, and by tests that poll by hand

	mu sync.Mutex
	st Status
	// active is the SHA-256 of the active copy's bytes: a service that
	// sends no ETag sends the same bundle at every poll, which is then
	// no change rather than an activation (a new engine, an empty
	// decision cache, a log line) each time.
	active [sha256.Size]byte
	// logged is the failure last logged, cleared by a success: the same
	// failure again and again (a service down, each retry) is logged once.
	logged string
	// keptAt is when the copy in force was downloaded, for bundle.json.
	keptAt time.Time
	// lastAnswer is when the last poll ended; run's watchdog starts a
	// new downloader when it is longer ago than any poll may take, plus
	// stallSlack (for a large bundle on a slow link).
	lastAnswer time.Time
	stallSlack time.Duration
}

// New builds a manager for o.Bundles: their REST clients and
// verification keys, read now, so that a missing key file stops the
// start. It downloads nothing until Run.
func New(o Options) (*Manager, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Manager{log: o.Log}
	var err error
	if m.metrics, err = newMetrics(o.Metrics, o.Bundles); err != nil {
		return nil, err
	}
	for i, b := range o.Bundles {
		key := fmt.Sprintf("authz.bundles[%d] (%s)", i, b.Name)
		client, err := remote.Client("bundle "+b.Name, b.Service, o.Log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		s := &source{
			cfg: b, dir: filepath.Join(o.DataDir, "bundles", b.Name), client: client, version: o.RegoVersion,
			act: o.Activator, log: o.Log.With("bundle", b.Name), now: o.Now, metrics: m.metrics,
			st: Status{Name: b.Name, URL: b.Service.URL, Resource: b.Resource}, stallSlack: time.Minute,
		}
		if b.Signing != nil {
			if s.verify, err = verificationConfig(*b.Signing); err != nil {
				return nil, fmt.Errorf("%s: signing: %w", key, err)
			}
		}
		m.sources = append(m.sources, s)
	}
	return m, nil
}

// Check reads what New reads of bundles (the signing keys, the files of
// the services' credentials) without building anything: the start-up
// check before data_dir is written.
func Check(bundles []config.Bundle) error {
	var errs []error
	for i, b := range bundles {
		key := fmt.Sprintf("authz.bundles[%d] (%s)", i, b.Name)
		if _, err := remote.Client("bundle "+b.Name, b.Service, nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		if b.Signing != nil {
			if _, err := verificationConfig(*b.Signing); err != nil {
				errs = append(errs, fmt.Errorf("%s: signing: %w", key, err))
			}
		}
	}
	return errors.Join(errs...)
}

func verificationConfig(s config.BundleSigning) (*bundle.VerificationConfig, error) {
	pemKey, err := os.ReadFile(s.PublicKeyFile)
	if err != nil {
		return nil, fmt.Errorf("public_key_file: %w", err)
	}
	if b, _ := pem.Decode(pemKey); b == nil {
		return nil, fmt.Errorf("public_key_file %s holds no PEM block", s.PublicKeyFile)
	}
	keys := map[string]*bundle.KeyConfig{s.KeyID: {Key: string(pemKey), Algorithm: s.Algorithm, Scope: s.Scope}}
	return bundle.NewVerificationConfig(keys, s.KeyID, s.Scope, nil), nil
}

// LoadKept activates the copy kept of each bundle, verified with the
// signing settings as they are now. A copy that no longer verifies, or
// does not compile, is refused and logged; the bundle then waits for its
// service.
func (m *Manager) LoadKept(ctx context.Context) {
	for _, s := range m.sources {
		s.loadKept(ctx)
	}
}

// Run downloads every bundle until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	ds := make([]*download.Downloader, len(m.sources))
	for i, s := range m.sources {
		var err error
		if ds[i], err = s.downloader(plugins.TriggerPeriodic); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	for i, s := range m.sources {
		wg.Go(func() { s.run(ctx, ds[i]) })
	}
	wg.Wait()
	return nil
}

// run runs d until ctx ends, and a new downloader in its place whenever
// a poll has not ended for longer than one may take. OPA's downloader
// bounds only the wait for a response's headers, and not even that while
// it long-polls: a service (or a proxy) that holds the request, or
// stalls in the body, would otherwise be waited for until a restart,
// with nothing failing, counted or logged.
func (s *source) run(ctx context.Context, d *download.Downloader) {
	bound := max(s.cfg.Polling.LongPollingTimeout, s.cfg.Polling.MaxDelay) + s.cfg.Service.Timeout + s.stallSlack
	s.answered(s.now())
	s.d = d // before Start: the callback reads it on the downloader's goroutine
	d.Start(ctx)
	tick := time.NewTicker(min(bound/4, 10*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.d.Stop(context.Background())
			return
		case <-tick.C:
		}
		s.mu.Lock()
		since := s.now().Sub(s.lastAnswer)
		s.mu.Unlock()
		if since < bound {
			continue
		}
		// Stop cancels the request under way: the old downloader has
		// ended, and called back for the last time, when it returns.
		s.d.Stop(context.Background())
		now := s.now()
		s.fail(now, ReasonDownload, fmt.Errorf("%s: no answer for %s (polling up to %s, long polling %s, timeout %s): asking again",
			s.where(), since.Round(time.Second), s.cfg.Polling.MaxDelay, s.cfg.Polling.LongPollingTimeout, s.cfg.Service.Timeout))
		next, err := s.downloader(plugins.TriggerPeriodic)
		if err != nil { // the same config as the first: cannot fail now
			s.log.Error("authz: bundle downloader not restarted", "err", err)
			return
		}
		s.answered(now)
		s.d = next
		next.Start(ctx)
	}
}

// answered records that a poll ended (or that one starts now).
func (s *source) answered(now time.Time) {
	s.mu.Lock()
	s.lastAnswer = now
	s.mu.Unlock()
}

// Status is the state of every bundle, in configuration order.
func (m *Manager) Status() []Status {
	out := make([]Status, 0, len(m.sources))
	for _, s := range m.sources {
		out = append(out, s.status())
	}
	return out
}

// Ready says which bundle has no active copy yet, and why.
func (m *Manager) Ready() error {
	var errs []error
	for _, s := range m.sources {
		st := s.status()
		if st.Active {
			continue
		}
		why := "no answer from the bundle service yet"
		if f := st.LastFailure; f != nil {
			why = f.Reason + ": " + f.Error
		}
		errs = append(errs, fmt.Errorf("authz bundle %s: not activated yet: %s", st.Name, why))
	}
	return errors.Join(errs...)
}

// downloader is the bundle's downloader; tests trigger theirs by hand.
func (s *source) downloader(trigger plugins.TriggerMode) (*download.Downloader, error) {
	p := s.cfg.Polling
	minDelay, maxDelay := int64(p.MinDelay/time.Second), int64(p.MaxDelay/time.Second)
	cfg := download.Config{Trigger: &trigger, Polling: download.PollingConfig{MinDelaySeconds: &minDelay, MaxDelaySeconds: &maxDelay}}
	if p.LongPollingTimeout > 0 {
		long := int64(p.LongPollingTimeout / time.Second)
		cfg.Polling.LongPollingTimeoutSeconds = &long
	}
	if err := cfg.ValidateAndInjectDefaults(); err != nil {
		return nil, fmt.Errorf("bundle %s: polling: %w", s.cfg.Name, err)
	}
	d := download.New(cfg, s.client, s.cfg.Resource).
		WithCallback(s.update).
		WithBundleVerificationConfig(s.verify).
		WithBundlePersistence(true).
		WithSizeLimitBytes(s.cfg.SizeLimitBytes).
		WithBundleName(s.cfg.Name).
		WithBundleParserOpts(ast.ParserOptions{RegoVersion: s.version})
	s.mu.Lock()
	etag := s.st.ETag
	s.mu.Unlock()
	// The kept copy's ETag, so that an unchanged bundle is a 304.
	d.SetCache(etag)
	return d, nil
}

// update is the downloader's callback for each poll.
func (s *source) update(ctx context.Context, u download.Update) error {
	now := s.now()
	s.answered(now)
	if errors.Is(u.Error, context.Canceled) {
		// Only Stop cancels the downloader's requests: a shutdown, or
		// run's new downloader, which says why itself.
		return nil
	}
	if u.Error != nil {
		reason := classify(u.Error)
		if reason == ReasonVerify {
			// Something came, and was no bundle meshid may use.
			s.mu.Lock()
			s.st.LastDownload = now
			s.mu.Unlock()
		}
		s.fail(now, reason, fmt.Errorf("%s: %w", s.where(), u.Error))
		s.keepETag()
		return nil // the downloader backs off by itself after an error
	}
	if u.Size > 0 {
		s.metrics.bytes.WithLabelValues(s.cfg.Name).Add(float64(u.Size))
	}
	if u.Bundle == nil {
		s.retag(now, u.ETag) // a 304 may name the copy in force anew
		s.unchanged(now)
		return nil
	}
	s.mu.Lock()
	s.st.LastDownload = now
	s.mu.Unlock()
	b := u.Bundle
	raw, rawErr := rawBytes(u)
	if rawErr == nil && s.isActive(raw) {
		// The same bytes as the copy in force: a 304 in all but name.
		// A service that gave them a new ETag (nginx's changes with the
		// file's mtime, as when the same bundle is published again)
		// answers 304 to that one only: remember it, on disk too, or a
		// restart or an outage would send the old one and be sent the
		// whole bundle again.
		s.retag(now, u.ETag)
		s.unchanged(now)
		return nil
	}
	if b.Type() == bundle.DeltaBundleType {
		s.fail(now, ReasonVerify, fmt.Errorf("%s: a delta bundle: meshid activates snapshot bundles only", s.where()))
		return nil
	}
	if err := s.act.Activate(ctx, authz.Bundle{Name: s.cfg.Name, Bundle: b}); err != nil {
		s.fail(now, ReasonCompile, fmt.Errorf("%s: revision %q refused: %w", s.where(), b.Manifest.Revision, err))
		// The downloader took this bundle's ETag: every later poll would
		// be a 304 for it, and it would never be compiled again, not even
		// once another bundle or the policy dir it needs has changed. As
		// OPA does, the next poll downloads it again, and tries again.
		s.keepETag()
		return nil
	}
	s.activated(now, b.Manifest.Revision, u.ETag, raw, false)
	s.succeeded(now)
	if rawErr != nil {
		s.fail(now, ReasonPersist, fmt.Errorf("%s: %w", s.where(), rawErr))
		return nil
	}
	if err := s.keep(raw, u.ETag, b.Manifest.Revision, now); err != nil {
		s.fail(now, ReasonPersist, fmt.Errorf("%s: activated but not kept: %w", s.where(), err))
	}
	return nil
}

// rawBytes are the bytes of the bundle an update downloaded.
func rawBytes(u download.Update) ([]byte, error) {
	buf, ok := u.Raw.(interface{ Bytes() []byte })
	if !ok {
		return nil, errors.New("the downloader gave no raw bundle to keep")
	}
	return buf.Bytes(), nil
}

// isActive says whether raw is the copy in force, byte for byte.
func (s *source) isActive(raw []byte) bool {
	sum := sha256.Sum256(raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Active && sum == s.active
}

// retag makes etag, if the service gave one, the ETag of the copy in
// force, in bundle.json too. bundle.json keeps the sum of the copy in
// force: if that copy could not be written (a full disk), the tarball
// there is an older one, and a restart does not send the new ETag for
// it.
func (s *source) retag(now time.Time, etag string) {
	s.mu.Lock()
	if etag == "" || !s.st.Active || s.st.ETag == etag {
		s.mu.Unlock()
		return
	}
	s.st.ETag = etag
	k := kept{ETag: etag, Revision: s.st.Revision, SHA256: hex.EncodeToString(s.active[:]), Source: s.address(), Downloaded: s.keptAt}
	s.mu.Unlock()
	if err := s.keepMeta(k); err != nil {
		s.fail(now, ReasonPersist, fmt.Errorf("%s: new ETag %s not kept: %w", s.where(), etag, err))
	}
}

// unchanged records a poll that found the copy in force still current:
// a 304, or the same bytes again from a service without ETags.
// A failure that was logged ends with a line of its own, so that the
// log says when the service was back.
func (s *source) unchanged(now time.Time) {
	if recovered, revision := s.succeeded(now); recovered {
		s.log.Info("authz: bundle service answers again; the bundle in force is still current", "revision", revision)
	}
}

// succeeded records a poll that ended well (an activation says so
// itself): whether it ends a failure that was logged, and the revision in
// force.
func (s *source) succeeded(now time.Time) (recovered bool, revision string) {
	s.mu.Lock()
	s.st.LastSuccess = now
	recovered, revision = s.logged != "", s.st.Revision
	s.logged = ""
	s.mu.Unlock()
	s.metrics.lastSuccess.WithLabelValues(s.cfg.Name).Set(float64(now.Unix()))
	return recovered, revision
}

// keepETag gives the downloader back the active copy's ETag after a
// failed poll or a refused bundle: OPA's downloader forgets its ETag on
// any error, and takes a refused bundle's when it did download one. A
// service back from an outage then answers the unchanged bundle with a
// 304 rather than sending it whole to every node at once, and a bundle
// refused is downloaded and tried again at the next poll (a bundle
// refused as unverifiable has no ETag of its own to remember: the
// downloader gives none with an error). With no active copy, the ETag
// is one no service has: OPA's REST client never unsets a header it once
// sent (an empty value leaves the last one), so without it a refused
// bundle's ETag would stay in If-None-Match and be answered 304 for
// good.
func (s *source) keepETag() {
	if s.d == nil {
		return
	}
	s.mu.Lock()
	etag := s.st.ETag
	s.mu.Unlock()
	if etag == "" {
		etag = noCopyETag
	}
	s.d.SetCache(etag)
}

// noCopyETag is the If-None-Match of a source with no copy in force.
const noCopyETag = `"meshid-no-copy"`

// address is the URL the bundle is requested at, built as OPA's REST
// client builds it.
func (s *source) address() string {
	return strings.TrimRight(s.cfg.Service.URL, "/") + "/" + strings.Trim(s.cfg.Resource, "/")
}

// where names the bundle and its address for messages.
func (s *source) where() string {
	return fmt.Sprintf("bundle %s from %s", s.cfg.Name, s.address())
}

// classify tells a failure to get a bundle from one that came and was
// not one (or not signed as it must be).
func classify(err error) string {
	var httpErr download.HTTPError
	var urlErr *url.Error
	if errors.As(err, &httpErr) || errors.As(err, &urlErr) || errors.Is(err, context.DeadlineExceeded) {
		return ReasonDownload
	}
	return ReasonVerify
}

func (s *source) fail(now time.Time, reason string, err error) {
	s.metrics.failures.WithLabelValues(s.cfg.Name, reason).Inc()
	s.mu.Lock()
	key := reason + "\x00" + err.Error()
	repeated := s.logged == key
	s.logged = key
	s.st.LastFailure = &Failure{At: now, Reason: reason, Error: err.Error()}
	active := s.st.Active
	s.mu.Unlock()
	if repeated {
		// A service that is down fails every backoff step: once in the
		// log is enough; the metrics count every time.
		s.log.Debug("authz: bundle still failing", "reason", reason, "err", err)
		return
	}
	msg := "authz: bundle refused; still deciding with the last good bundle"
	switch {
	case reason == ReasonPersist:
		msg = "authz: bundle activated but not kept on disk; a restart without the service would not have it"
	case reason == ReasonDownload && active:
		msg = "authz: bundle download failed; still deciding with the last good bundle"
	case reason == ReasonDownload:
		msg = "authz: bundle download failed; no bundle active yet, every request is denied"
	case !active:
		msg = "authz: bundle refused; no bundle active yet, every request is denied"
	}
	s.log.Error(msg, "reason", reason, "err", err)
}

func (s *source) activated(now time.Time, revision, etag string, raw []byte, fromDisk bool) {
	sum := sha256.Sum256(raw)
	s.mu.Lock()
	s.active = sum
	old := s.st.Revision
	hadOld := s.st.Active
	s.st.Active, s.st.Revision, s.st.ETag, s.st.FromDisk, s.st.LastActivation = true, revision, etag, fromDisk, now
	if !fromDisk {
		s.keptAt = now
	}
	s.mu.Unlock()
	if hadOld && old != revision {
		s.metrics.revision.DeleteLabelValues(s.cfg.Name, old)
	}
	s.metrics.revision.WithLabelValues(s.cfg.Name, revision).Set(1)
	s.metrics.lastActivation.WithLabelValues(s.cfg.Name).Set(float64(now.Unix()))
	s.log.Info("authz: bundle activated", "revision", revision, "etag", etag, "from_disk", fromDisk)
}

func (s *source) status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	if f := s.st.LastFailure; f != nil {
		c := *f
		st.LastFailure = &c
	}
	return st
}
