package helper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// jwtRetry is how soon a failed JWT-SVID fetch or write is tried again.
const jwtRetry = 2 * time.Second

// program is what the handlers need of the supervised program.
type program interface {
	start() error
	started() bool
	signal(os.Signal) error
	pid() int
	stop() int
	exitStatus() int
}

// state is what the helper knows between events. Each handler takes one
// event, updates the state and, when the helper is done, says how it ends.
type state struct {
	cfg  Config
	log  *slog.Logger
	prog program
	// kill signals the pid in -pid-file.
	kill func(pid int, sig syscall.Signal) error

	held    *x509svid.SVID // the latest SVID meshid sent
	written svidFiles      // what is on disk; zero before the first write

	jwtReady bool      // a JWT-SVID is on disk, or none is wanted
	jwtDue   time.Time // when to fetch the JWT-SVID next; zero: never

	unreachableSince time.Time // zero while meshid answers
	lastErr          error     // the latest stream failure
	lastLogged       string    // so that a retried failure is logged once
	warnedStall      string    // serial of the SVID a stall was reported for
}

// outcome is how the helper ends: the program's status and why it failed.
type outcome struct {
	code int
	err  error
}

func newState(cfg Config, prog program) *state {
	return &state{
		cfg: cfg, log: cfg.Log, prog: prog, kill: syscall.Kill,
		jwtReady: len(cfg.JWTAudiences) == 0,
	}
}

// onX509Update writes a new SVID and tells the program; the first write
// also fetches the JWT-SVID and starts the program.
func (s *state) onX509Update(ctx context.Context, upd *workloadapi.X509Context) *outcome {
	if !s.unreachableSince.IsZero() {
		s.log.Info("meshid reachable again", "after", s.cfg.Clock().Sub(s.unreachableSince).Round(time.Millisecond))
	}
	s.unreachableSince, s.lastErr, s.lastLogged = time.Time{}, nil, ""

	svid := upd.DefaultSVID()
	out, err := s.cfg.Files.render(svid, upd.Bundles)
	if err != nil {
		s.log.Error("cannot use meshid's update", "err", err)
		return nil
	}
	s.held = svid
	if out.equal(s.written) {
		return nil // a reconnect resent what is on disk
	}
	first := s.written.cert == nil
	paths, err := s.cfg.Files.write(out)
	if err != nil {
		if first {
			// Nothing usable was ever written: say so and stop.
			return &outcome{s.stopProgram(), err}
		}
		// Not signalled, the program keeps what it loaded; the next update
		// tries again, since what is on disk is not what it brings.
		s.log.Error("cannot rewrite the SVID files; not signalling", "err", err, "rewritten", strings.Join(paths, " "))
		return nil
	}
	s.written = out
	leaf := svid.Certificates[0]
	s.log.Info("wrote SVID", "spiffe_id", svid.ID.String(), "serial", leaf.SerialNumber.Text(16),
		"expires", leaf.NotAfter.UTC().Format(time.RFC3339), "files", strings.Join(paths, " "))

	if first && !s.jwtReady {
		if err := s.fetchJWT(ctx); err != nil {
			s.log.Warn("JWT-SVID not written yet", "err", err)
		}
	}
	if first && len(s.cfg.Cmd) > 0 {
		return s.startProgram()
	}
	// The first write signals too: a -pid-file program may be running on
	// an earlier run's files.
	s.reload()
	return nil
}

// onJWTDue refetches the JWT-SVID; the first success may start the
// program that waited for it.
func (s *state) onJWTDue(ctx context.Context) *outcome {
	wasReady := s.jwtReady
	if err := s.fetchJWT(ctx); err != nil {
		s.log.Warn("JWT-SVID not refreshed", "err", err)
	}
	if !wasReady && s.jwtReady {
		return s.startProgram()
	}
	return nil
}

// onWatchError notes a failed stream. Only Unavailable runs the
// unreachable clock: a refusal means meshid answers, and entries are
// hot-reloaded, so the helper keeps waiting.
func (s *state) onWatchError(err error) {
	if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
		return
	}
	s.lastErr = err
	switch {
	case status.Code(err) != codes.Unavailable:
		s.unreachableSince = time.Time{} // it answered
	case s.unreachableSince.IsZero():
		s.unreachableSince = s.cfg.Clock()
	}
	// One line per distinct problem, not one per retry.
	if msg := s.cfg.Explain(err).Error(); msg != s.lastLogged {
		s.lastLogged = msg
		s.log.Warn("no SVID update from meshid; retrying", "err", msg)
	}
}

// onWatchEnd: go-spiffe stopped watching, which no retry undoes.
func (s *state) onWatchEnd(err error) *outcome {
	code := s.stopProgram()
	return &outcome{code, fmt.Errorf("meshid ended the SVID stream: %w", s.cfg.Explain(err))}
}

// onTick gives up on a meshid unreachable for too long, and warns once
// per SVID when rotation has stalled.
func (s *state) onTick() *outcome {
	now := s.cfg.Clock()
	if !s.unreachableSince.IsZero() && now.Sub(s.unreachableSince) >= s.cfg.UnreachableTimeout {
		code := s.stopProgram()
		return &outcome{code, fmt.Errorf("giving up after %s (-unreachable-timeout): %w",
			now.Sub(s.unreachableSince).Round(time.Second), s.cfg.Explain(s.lastErr))}
	}
	if s.held == nil {
		return nil
	}
	leaf := s.held.Certificates[0]
	if serial := leaf.SerialNumber.Text(16); serial != s.warnedStall && PastRenewal(leaf.NotBefore, leaf.NotAfter, now) {
		s.warnedStall = serial
		s.log.Warn("SVID is past 3/4 of its life and meshid has not renewed it: rotation has stalled",
			"spiffe_id", s.held.ID.String(), "serial", serial, "expires_in", leaf.NotAfter.Sub(now).Round(time.Second))
	}
	return nil
}

// onProgramExit: the helper exits as its program did.
func (s *state) onProgramExit() *outcome {
	code := s.prog.exitStatus()
	s.log.Info("program exited", "status", code)
	return &outcome{code, nil}
}

// onSignal: SIGINT or SIGTERM to the helper; it passes the stop on and
// exits as the program does.
func (s *state) onSignal() *outcome { return &outcome{s.stopProgram(), nil} }

func (s *state) onExitAfter() *outcome {
	s.log.Info("exiting after -exit-after", "after", s.cfg.ExitAfter)
	return &outcome{s.stopProgram(), nil}
}

// startProgram starts the program once it has everything it reads.
func (s *state) startProgram() *outcome {
	if len(s.cfg.Cmd) == 0 || s.prog.started() || s.held == nil || !s.jwtReady {
		return nil
	}
	if err := s.prog.start(); err != nil {
		return &outcome{0, err}
	}
	return nil
}

func (s *state) stopProgram() int {
	if !s.prog.started() {
		return 0
	}
	code := s.prog.stop()
	s.log.Info("stopped program", "status", code)
	return code
}

// fetchJWT fetches and writes the JWT-SVID and sets when to do it again:
// at half its remaining life, or jwtRetry after a failure.
func (s *state) fetchJWT(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.JWTTimeout)
	defer cancel()
	aud := s.cfg.JWTAudiences
	svid, err := s.cfg.Source.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud[0], ExtraAudiences: aud[1:]})
	if err == nil {
		var path string
		if path, err = s.cfg.Files.WriteJWT(svid); err == nil {
			s.log.Info("wrote JWT-SVID", "spiffe_id", svid.ID.String(), "audience", strings.Join(svid.Audience, ","),
				"expires", svid.Expiry.UTC().Format(time.RFC3339), "file", path)
		}
	} else {
		err = fmt.Errorf("fetch JWT-SVID: %w", s.cfg.Explain(err))
	}
	now := s.cfg.Clock()
	if err != nil {
		s.jwtDue = now.Add(jwtRetry)
		return err
	}
	s.jwtReady = true
	s.jwtDue = now.Add(max(svid.Expiry.Sub(now)/2, time.Second))
	return nil
}

// reload tells the program to reload its files: the pid in -pid-file if
// set, else the program the helper started.
func (s *state) reload() {
	sig := s.cfg.RenewSignal
	switch {
	case s.cfg.PIDFile != "":
		b, err := os.ReadFile(s.cfg.PIDFile)
		if err != nil {
			s.log.Warn("cannot signal: -pid-file unreadable", "err", err)
			return
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			s.log.Warn("cannot signal: -pid-file holds no pid", "file", s.cfg.PIDFile, "content", strings.TrimSpace(string(b)))
			return
		}
		if err := s.kill(pid, sig); err != nil {
			s.log.Warn("cannot signal the pid in -pid-file", "pid", pid, "signal", unix.SignalName(sig), "err", err)
			return
		}
		s.log.Info("signalled", "pid", pid, "signal", unix.SignalName(sig))
	case s.prog.started():
		if err := s.prog.signal(sig); err != nil {
			s.log.Warn("cannot signal the program", "pid", s.prog.pid(), "err", err)
			return
		}
		s.log.Info("signalled", "pid", s.prog.pid(), "signal", unix.SignalName(sig))
	}
}
