// Package helper is meshid's helper mode (`meshid svid watch`): a Workload
// API client that keeps a process's SVID, key and bundle files (and
// optionally a JWT-SVID file) fresh, tells the program that reads them to
// reload, or starts and supervises that program. It owns the files it is
// told to write, the program it is told to start and the decision when to
// give up on meshid. It never finds or dials the socket (the caller hands
// it a Source), never parses flags, and never signals a process other
// than its own program or the pid in the -pid-file it was given.
package helper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Source is what the helper needs of a Workload API client; go-spiffe's
// *workloadapi.Client is one.
type Source interface {
	WatchX509Context(context.Context, workloadapi.X509ContextWatcher) error
	FetchJWTSVID(context.Context, jwtsvid.Params) (*jwtsvid.SVID, error)
}

// Config is one helper run: what svid watch's flags say (named in the
// comments, since messages name them too), then what it runs against.
type Config struct {
	Files Files
	// JWTAudiences has a JWT-SVID for these audiences kept in Files.JWT
	// (-jwt-audience); none keeps no JWT-SVID.
	JWTAudiences []string
	// JWTTimeout bounds each JWT-SVID fetch (-timeout).
	JWTTimeout time.Duration
	// Cmd is the program to start once the files exist, supervise and
	// exit with (-cmd PROG ARGS...); empty: none.
	Cmd []string
	// RenewSignal is sent after each rewrite (-renew-signal).
	RenewSignal syscall.Signal
	// PIDFile names a file holding the pid to send RenewSignal to instead
	// of Cmd's, read at each rewrite (-pid-file).
	PIDFile string
	// ExitAfter stops the helper (and Cmd) after this long; 0 runs until
	// ctx ends (-exit-after).
	ExitAfter time.Duration
	// UnreachableTimeout is how long meshid may be unreachable before the
	// helper stops Cmd and fails (-unreachable-timeout).
	UnreachableTimeout time.Duration
	// StopGrace is how long Cmd has to exit after SIGTERM before SIGKILL.
	StopGrace time.Duration
	// CheckEvery is how often unreachability and stalled rotation are
	// checked.
	CheckEvery time.Duration

	// Source is the Workload API (required).
	Source Source
	// Explain says what a Workload API error means for the user.
	Explain func(error) error
	Log     *slog.Logger
	// Stdin, Stdout and Stderr are Cmd's.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Clock          func() time.Time
}

// Defaults: svid watch's flags start from these, and Run uses them for a
// zero JWTTimeout, RenewSignal, StopGrace or CheckEvery. A zero
// UnreachableTimeout is an error, not a default: it would give up at once.
const (
	DefaultJWTTimeout         = 10 * time.Second
	DefaultRenewSignal        = syscall.SIGHUP
	DefaultUnreachableTimeout = 30 * time.Second
	DefaultStopGrace          = 10 * time.Second
	DefaultCheckEvery         = time.Second
)

func (c Config) withDefaults() Config {
	zero := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	zero(&c.JWTTimeout, DefaultJWTTimeout)
	zero(&c.StopGrace, DefaultStopGrace)
	zero(&c.CheckEvery, DefaultCheckEvery)
	if c.RenewSignal == 0 {
		c.RenewSignal = DefaultRenewSignal
	}
	c.Files = c.Files.withDefaults()
	if c.Explain == nil {
		c.Explain = func(err error) error { return err }
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Source == nil {
		errs = append(errs, errors.New("no Workload API source"))
	}
	if c.Files.Dir == "" {
		errs = append(errs, errors.New("-write DIR is required"))
	}
	if c.UnreachableTimeout <= 0 {
		errs = append(errs, errors.New("-unreachable-timeout must be positive"))
	}
	if c.JWTTimeout < 0 {
		errs = append(errs, errors.New("-timeout must be positive"))
	}
	if c.ExitAfter < 0 {
		errs = append(errs, errors.New("-exit-after must not be negative"))
	}
	return errors.Join(errs...)
}

// Run keeps the files fresh until ctx ends, ExitAfter passes, the program
// exits, or meshid stays unreachable past UnreachableTimeout. Its code is
// the program's exit status (0 without one); err says why the helper
// failed, if it did.
func Run(ctx context.Context, cfg Config) (code int, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(cfg.Files.Dir, 0o755); err != nil {
		return 0, fmt.Errorf("-write %s: %w", cfg.Files.Dir, err)
	}
	prog := newSupervisor(cfg.Cmd, cfg.Stdin, cfg.Stdout, cfg.Stderr, cfg.StopGrace, cfg.Log)
	s := newState(cfg, prog)

	st := watch(ctx, cfg.Source)
	defer st.stop()
	ticker := time.NewTicker(cfg.CheckEvery)
	defer ticker.Stop()
	var exitAfter <-chan time.Time
	if cfg.ExitAfter > 0 {
		t := time.NewTimer(cfg.ExitAfter)
		defer t.Stop()
		exitAfter = t.C
	}
	jwt := newAlarm(cfg.Clock)
	defer jwt.stop()

	for {
		var o *outcome
		select {
		case <-ctx.Done():
			o = s.onSignal()
		case <-exitAfter:
			o = s.onExitAfter()
		case <-prog.exited():
			o = s.onProgramExit()
		case upd := <-st.updates:
			o = s.onX509Update(ctx, upd)
		case err := <-st.errs:
			s.onWatchError(err)
		case err := <-st.ended:
			o = s.onWatchEnd(err)
		case <-jwt.c():
			jwt.fired()
			o = s.onJWTDue(ctx)
		case <-ticker.C:
			o = s.onTick()
		}
		if o != nil {
			return o.code, o.err
		}
		jwt.set(s.jwtDue)
	}
}

// alarm is one timer that follows a deadline the handlers move.
type alarm struct {
	clock func() time.Time
	t     *time.Timer
	at    time.Time // what t is set for; zero: not set
}

func newAlarm(clock func() time.Time) *alarm {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &alarm{clock: clock, t: t}
}

func (a *alarm) c() <-chan time.Time { return a.t.C }

// set arms the timer for at, unless it already is; a zero at disarms it.
func (a *alarm) set(at time.Time) {
	if at.Equal(a.at) {
		return
	}
	a.at = at
	a.t.Stop()
	if !at.IsZero() {
		a.t.Reset(at.Sub(a.clock()))
	}
}

func (a *alarm) fired() { a.at = time.Time{} }
func (a *alarm) stop()  { a.t.Stop() }
