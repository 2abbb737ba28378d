package ca

import (
	"context"
	"time"
)

// Run advances the timeline every RotateInterval until ctx ends. A failing
// rotation is retried on the next tick; it is logged when it starts,
// changes or ends, and reported by Health.
func (a *Authority) Run(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.rotate(ctx)
		}
	}
}

// BundleChanged is signalled after a rotation changed the published
// bundles. Signals coalesce: one pending signal stands for any number of
// changes, so a receiver reads the bundles after each.
func (a *Authority) BundleChanged() <-chan struct{} { return a.bundleChanged }

// Rotate brings the generations in line with the timeline at the current
// time. It reports whether the published bundles changed since the
// previous call of Rotate, by this rotation or by Run's, so that a caller
// that pushes bundles on its own schedule misses no change.
func (a *Authority) Rotate() (bundleChanged bool, err error) {
	err = a.rotate(context.Background())
	a.mu.Lock()
	defer a.mu.Unlock()
	bundleChanged, a.reported = a.version != a.reported, a.version
	return bundleChanged, err
}

// rotate is one step of the timeline: refresh an upstream's roots when
// due, prepare a successor when one is due, retire what expired, record
// the outcome.
func (a *Authority) rotate(ctx context.Context) error {
	a.rotateMu.Lock()
	defer a.rotateMu.Unlock()
	now := a.clock()

	// Only rotations change gens, and they hold rotateMu: reading it here
	// needs no mu, and writing a generation (or asking an upstream for
	// one) keeps mu free for minting.
	var rootsChanged bool
	var pollErr error
	if a.up != nil {
		var newest *generation
		if len(a.gens) > 0 {
			newest = a.gens[len(a.gens)-1]
		}
		rootsChanged, pollErr = a.up.poll(ctx, newest, now, a.rand)
	}
	var next *generation
	due, err := a.successorDue(now)
	if due {
		next, err = a.prepare(ctx, now)
	}
	if err == nil {
		err = pollErr
	}

	a.mu.Lock()
	changed := next != nil || rootsChanged
	if rootsChanged {
		a.log.Info("upstream roots changed: published in the bundle", "upstream", a.upstreamName(), "roots", len(a.up.roots()))
	}
	if next != nil {
		a.gens = append(a.gens, next)
	}
	if a.up != nil && (next != nil || rootsChanged) {
		a.orphanLocked()
	}
	retired := a.retireLocked(now)
	if len(retired) > 0 {
		changed = true
	}
	a.metrics.expiry.Set(float64(a.signsUntilLocked().Unix()))
	if changed {
		a.version++
		select {
		case a.bundleChanged <- struct{}{}:
		default: // a signal is pending already
		}
	}
	if next != nil {
		a.log.Info("prepared CA generation: published in the bundle", "generation", next.name,
			"not_after", next.cert().NotAfter, "signs_from", a.signsFromLocked(next))
	}
	a.recordLocked(now, err)
	a.mu.Unlock()

	for _, g := range retired {
		if err := a.store.remove(g.name); err != nil {
			a.log.Warn("could not remove expired CA generation", "generation", g.name, "err", err)
		}
	}
	return err
}

// successorDue says whether a successor must be prepared now, or why one
// is needed and cannot be made.
func (a *Authority) successorDue(now time.Time) (bool, error) {
	if len(a.gens) == 0 {
		return true, nil
	}
	newest := a.gens[len(a.gens)-1]
	if a.up == nil {
		return !now.Before(newest.lifeAt(1, 2)), nil
	}
	return a.up.due(newest, now)
}

// prepare creates and persists the next generation.
func (a *Authority) prepare(ctx context.Context, now time.Time) (*generation, error) {
	g, err := a.newGeneration(ctx, now)
	if err != nil {
		return nil, err
	}
	if g.name, err = a.store.save(g); err != nil {
		return nil, err
	}
	return g, nil
}

// retireLocked drops the expired generations and returns them, except the
// last one when nothing else is left: until a successor is written the
// bundles keep naming the trust domain's root, and activeLocked refuses to
// sign with it.
func (a *Authority) retireLocked(now time.Time) []*generation {
	var live, expired []*generation
	for _, g := range a.gens {
		if g.expiredAt(now) {
			expired = append(expired, g)
		} else {
			live = append(live, g)
		}
	}
	if len(live) == 0 && len(expired) > 0 {
		live, expired = expired[len(expired)-1:], expired[:len(expired)-1]
	}
	for _, g := range expired {
		a.log.Info("CA generation expired: removing it from the bundle", "generation", g.name, "expired", g.cert().NotAfter)
	}
	a.gens = live
	return expired
}

// recordLocked keeps the outcome of a rotation for Health and the metrics
// and logs what changed. A failure repeats every tick until an operator
// acts: it is logged when it starts, when its error changes and when it
// ends, and so is the moment signing stops or resumes.
func (a *Authority) recordLocked(now time.Time, err error) {
	if err != nil {
		a.metrics.rotationFailures.Inc()
	}
	switch {
	case err != nil && a.failure == nil:
		a.failingSince = now
		a.log.Error("CA rotation failed; the CA keeps signing with what is still valid",
			"err", err, "signs_until", a.signsUntilLocked())
	case err != nil && err.Error() != a.failure.Error():
		a.log.Error("CA rotation still failing, with another error",
			"err", err, "failing_since", a.failingSince, "signs_until", a.signsUntilLocked())
	case err == nil && a.failure != nil:
		a.log.Info("CA rotation recovered", "failing_since", a.failingSince)
	}
	a.failure = err

	active := a.activeLocked(now)
	switch {
	case active == nil && a.canSign:
		a.log.Error("no valid CA generation left: no SVID can be minted until a successor is written",
			"expired", a.signsUntilLocked(), "err", err)
	case active != nil && !a.canSign:
		a.log.Info("CA signs again", "generation", active.name, "not_after", active.cert().NotAfter)
	}
	a.canSign = active != nil
}

// signsFromLocked says when g starts signing: at 5/6 of its predecessor's
// life, or at once if it has none.
func (a *Authority) signsFromLocked(g *generation) time.Time {
	for i := 1; i < len(a.gens); i++ {
		if a.gens[i] == g {
			return a.gens[i-1].lifeAt(5, 6)
		}
	}
	return g.cert().NotBefore
}

// activeLocked returns the generation that signs at now: of the unexpired
// ones that chain to the roots, the newest whose predecessor has passed
// 5/6 of its life (or no longer chains), or the oldest. It returns nil
// when every generation has expired.
func (a *Authority) activeLocked(now time.Time) *generation {
	var active *generation
	for i, g := range a.gens {
		if g.expiredAt(now) || g.orphaned {
			continue
		}
		if active == nil || !now.Before(a.gens[i-1].lifeAt(5, 6)) {
			active = g
		}
	}
	return active
}

// signsUntilLocked returns when the last listed generation expires: the
// end of signing unless a successor is written first.
func (a *Authority) signsUntilLocked() time.Time {
	var until time.Time
	for _, g := range a.gens {
		if na := g.cert().NotAfter; na.After(until) {
			until = na
		}
	}
	return until
}

// orphanLocked marks the generations whose chain ends under none of the
// upstream's roots, as after a root was removed from the upstream.
func (a *Authority) orphanLocked() {
	roots := a.up.roots()
	for _, g := range a.gens {
		g.orphaned = !chainsTo(g, roots)
		if g.orphaned {
			a.log.Warn("CA generation chains to no upstream root any more: it signs nothing", "generation", g.name, "upstream", a.upstreamName())
		}
	}
}
