package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
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

// svidWatch is helper mode: it keeps SVID files fresh for programs that
// only read files, and tells them when to reload. Its exit status is the
// managed program's when there is one.
func svidWatch(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code, err := runSVIDWatch(ctx, args, stdout, stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		stop()
		os.Exit(code)
	}
	return nil
}

// watchConfig is svid watch's flags, parsed.
type watchConfig struct {
	endpoint    endpoint
	files       svidFiles
	jwtAudience []string
	jwtFile     string
	cmd         []string
	renewSignal syscall.Signal
	pidFile     string
	exitAfter   time.Duration
	unreachable time.Duration
	timeout     time.Duration // of each JWT-SVID fetch
}

func parseWatchFlags(args []string, stderr io.Writer) (watchConfig, error) {
	flags := flag.NewFlagSet("svid watch", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, `Usage: meshid svid watch -write DIR [file flags] [-jwt-audience A -jwt-file FILE]
                         [-renew-signal SIGHUP] [-pid-file F] [-exit-after D]
                         [-unreachable-timeout D] [-cmd PROG ARGS...]

Helper mode: keeps this process's SVID, key (0600) and bundle in DIR and
rewrites them atomically on every rotation meshid pushes. After each rewrite
it sends -renew-signal to the process whose pid is in -pid-file, or else to
PROG. -cmd must come last: everything after it is the program to start once
the files exist, supervise (SIGINT or SIGTERM to the helper stops it with
SIGTERM, SIGKILL 10s later) and exit with.
With -jwt-audience, a JWT-SVID is kept in -jwt-file (0600), refetched at
half its life. Exits 1 when meshid has been unreachable for longer than
-unreachable-timeout, and warns when the SVID it holds is past 3/4 of its
life without renewal.

`)
		flags.PrintDefaults()
	}
	// -cmd swallows the rest so that PROG's own flags need no "--".
	var cmd []string
	for i, a := range args {
		if a == "-cmd" || a == "--cmd" {
			cmd = args[i+1:]
			args = args[:i]
			if len(cmd) == 0 {
				flags.Usage()
				return watchConfig{}, errors.New("svid watch: -cmd needs a program")
			}
			break
		}
	}
	ep := addEndpointFlags(flags)
	files := addSVIDFileFlags(flags)
	var aud audiences
	flags.Var(&aud, "jwt-audience", "also keep a JWT-SVID for this audience (repeat for several)")
	jwtFile := flags.String("jwt-file", "jwt_svid.token", "name of the JWT-SVID file in -write")
	sig := flags.String("renew-signal", "SIGHUP", "signal sent after each rewrite")
	pidFile := flags.String("pid-file", "", "send -renew-signal to the pid in this file (read at each rotation)")
	exitAfter := flags.Duration("exit-after", 0, "exit (stopping PROG) after this long; 0 runs until signalled")
	unreachable := flags.Duration("unreachable-timeout", 30*time.Second, "exit 1 once meshid has been unreachable this long")
	if err := flags.Parse(args); err != nil {
		return watchConfig{}, err
	}
	if flags.NArg() > 0 {
		flags.Usage()
		return watchConfig{}, fmt.Errorf("svid watch: unexpected argument %q (program arguments go after -cmd PROG)", flags.Arg(0))
	}
	if *files.dir == "" {
		flags.Usage()
		return watchConfig{}, errors.New("svid watch: -write DIR is required")
	}
	e, err := parseEndpoint(*ep.socket)
	if err != nil {
		return watchConfig{}, err
	}
	s, err := parseSignal(*sig)
	if err != nil {
		return watchConfig{}, err
	}
	if *unreachable <= 0 {
		return watchConfig{}, errors.New("svid watch: -unreachable-timeout must be positive")
	}
	return watchConfig{
		endpoint: e, files: files, jwtAudience: aud, jwtFile: *jwtFile,
		cmd: cmd, renewSignal: s, pidFile: *pidFile,
		exitAfter: *exitAfter, unreachable: *unreachable, timeout: *ep.timeout,
	}, nil
}

func parseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if s := unix.SignalNum(n); s != 0 {
		return s, nil
	}
	return 0, fmt.Errorf("-renew-signal %q: not a signal name (try SIGHUP, SIGUSR1)", name)
}

// workloadWatcher is what the helper needs of go-spiffe's client.
type workloadWatcher interface {
	WatchX509Context(context.Context, workloadapi.X509ContextWatcher) error
	FetchJWTSVID(context.Context, jwtsvid.Params) (*jwtsvid.SVID, error)
}

func runSVIDWatch(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	cfg, err := parseWatchFlags(args, stderr)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(*cfg.files.dir, 0o755); err != nil {
		return 0, fmt.Errorf("-write %s: %w", *cfg.files.dir, err)
	}
	c, err := cfg.endpoint.client(ctx, workloadapi.WithBackoffStrategy(quickBackoff{}))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	h := &helper{
		cfg:    cfg,
		source: c,
		log:    slog.New(slog.NewTextHandler(stderr, nil)),
		clock:  time.Now,
		stdout: stdout,
		stderr: stderr,
	}
	return h.run(ctx)
}

// helper is one svid watch run.
type helper struct {
	cfg    watchConfig
	source workloadWatcher
	log    *slog.Logger
	clock  func() time.Time
	// tick is how often unreachability and stalls are checked; 0 means 1s.
	tick time.Duration
	// stopGrace is how long a program the helper stops may take to exit
	// before it is killed; 0 means 10s.
	stopGrace      time.Duration
	stdout, stderr io.Writer
}

// watchEvents turns go-spiffe's callbacks into channels for the loop.
type watchEvents struct {
	updates chan *workloadapi.X509Context
	errs    chan error
}

func (w watchEvents) OnX509ContextUpdate(c *workloadapi.X509Context) {
	// Only the newest matters: drop an unread older one.
	for {
		select {
		case w.updates <- c:
			return
		default:
			select {
			case <-w.updates:
			default:
			}
		}
	}
}

func (w watchEvents) OnX509ContextWatchError(err error) {
	select {
	case w.errs <- err:
	default:
	}
}

// quickBackoff retries a lost stream within 2s, so that files are current
// soon after meshid restarts (go-spiffe's default waits up to 30s).
type quickBackoff struct{}

func (quickBackoff) NewBackoff() workloadapi.Backoff { return &doubling{} }

type doubling struct{ n int }

func (b *doubling) Next() time.Duration {
	d := 250 * time.Millisecond << min(b.n, 3)
	b.n++
	return d
}
func (b *doubling) Reset() { b.n = 0 }

func (h *helper) run(ctx context.Context) (int, error) {
	cfg := h.cfg
	tick := h.tick
	if tick == 0 {
		tick = time.Second
	}
	stopGrace := h.stopGrace
	if stopGrace == 0 {
		stopGrace = 10 * time.Second
	}
	watchCtx, cancelWatch := context.WithCancel(ctx)
	ev := watchEvents{updates: make(chan *workloadapi.X509Context, 1), errs: make(chan error, 1)}
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = h.source.WatchX509Context(watchCtx, ev)
	}()
	defer func() {
		cancelWatch()
		<-watchDone
	}()

	var (
		held             *x509svid.SVID
		written          []byte // fingerprint of the files on disk
		unreachableSince time.Time
		lastErr          error
		lastLogged       string
		warnedStall      string // serial of the SVID a stall was reported for
		child            *exec.Cmd
		childDone        chan error
		jwtTimer         <-chan time.Time
		jwtReady         = len(cfg.jwtAudience) == 0
		exitAfter        <-chan time.Time
	)
	if cfg.exitAfter > 0 {
		exitAfter = time.After(cfg.exitAfter)
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()

	startChild := func() error {
		if child != nil || len(cfg.cmd) == 0 || held == nil || !jwtReady {
			return nil
		}
		child = exec.Command(cfg.cmd[0], cfg.cmd[1:]...)
		child.Stdin, child.Stdout, child.Stderr = os.Stdin, h.stdout, h.stderr
		// When stdout is not a file, Wait also waits for whatever inherited
		// the pipe; the program's exit is what counts.
		child.WaitDelay = time.Second
		if err := child.Start(); err != nil {
			child = nil
			return fmt.Errorf("-cmd %s: %w", cfg.cmd[0], err)
		}
		h.log.Info("started program", "pid", child.Process.Pid, "cmd", strings.Join(cfg.cmd, " "))
		childDone = make(chan error, 1)
		go func(c *exec.Cmd) { childDone <- c.Wait() }(child)
		return nil
	}
	// stopChild forwards sig and waits for the program's exit status,
	// killing it if it has not exited within stopGrace.
	stopChild := func(sig os.Signal) int {
		if child == nil {
			return 0
		}
		_ = child.Process.Signal(sig)
		select {
		case err := <-childDone:
			return exitStatus(err)
		case <-time.After(stopGrace):
			h.log.Warn("program ignored the signal; killing it", "pid", child.Process.Pid, "signal", sig, "grace", stopGrace)
			_ = child.Process.Kill()
			return exitStatus(<-childDone)
		}
	}
	fetchJWT := func() error {
		jctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
		svid, err := h.source.FetchJWTSVID(jctx, jwtsvid.Params{Audience: cfg.jwtAudience[0], ExtraAudiences: cfg.jwtAudience[1:]})
		if err != nil {
			jwtTimer = time.After(2 * time.Second)
			return fmt.Errorf("fetch JWT-SVID: %w", cfg.endpoint.explain(err))
		}
		path := filepath.Join(*cfg.files.dir, cfg.jwtFile)
		if err := writeFileAtomic(path, []byte(svid.Marshal()), 0o600); err != nil {
			jwtTimer = time.After(2 * time.Second)
			return err
		}
		jwtReady = true
		next := svid.Expiry.Sub(h.clock()) / 2
		jwtTimer = time.After(max(next, time.Second))
		h.log.Info("wrote JWT-SVID", "spiffe_id", svid.ID.String(), "audience", strings.Join(svid.Audience, ","), "expires", svid.Expiry.UTC().Format(time.RFC3339), "file", path)
		return nil
	}

	for {
		select {
		case <-ctx.Done():
			// SIGINT or SIGTERM: pass it on and exit as the program does.
			return stopChild(syscall.SIGTERM), nil

		case <-exitAfter:
			h.log.Info("exiting after -exit-after", "after", cfg.exitAfter)
			return stopChild(syscall.SIGTERM), nil

		case err := <-childDone:
			code := exitStatus(err)
			h.log.Info("program exited", "status", code)
			return code, nil

		case upd := <-ev.updates:
			if !unreachableSince.IsZero() {
				h.log.Info("meshid reachable again", "after", h.clock().Sub(unreachableSince).Round(time.Millisecond))
			}
			unreachableSince, lastErr, lastLogged = time.Time{}, nil, ""
			svid := upd.DefaultSVID()
			fp, err := fingerprint(svid, upd, *cfg.files.federated)
			if err != nil {
				h.log.Error("cannot use meshid's update", "err", err)
				continue
			}
			held = svid
			if bytes.Equal(fp, written) {
				continue // a reconnect resent what is on disk
			}
			paths, err := cfg.files.write(svid, upd.Bundles)
			if err != nil {
				if written == nil {
					// Nothing usable was ever written: say so and stop.
					return stopChild(syscall.SIGTERM), err
				}
				h.log.Error("cannot rewrite SVID files; the old ones stay", "err", err)
				continue
			}
			first := written == nil
			written = fp
			leaf := svid.Certificates[0]
			h.log.Info("wrote SVID", "spiffe_id", svid.ID.String(), "serial", leaf.SerialNumber.Text(16),
				"expires", leaf.NotAfter.UTC().Format(time.RFC3339), "files", strings.Join(paths, " "))
			if first && !jwtReady {
				if err := fetchJWT(); err != nil {
					h.log.Warn("JWT-SVID not written yet", "err", err)
				}
			}
			if first && child == nil && len(cfg.cmd) > 0 {
				if err := startChild(); err != nil {
					return 0, err
				}
				continue
			}
			h.signalRenewal(child)

		case <-jwtTimer:
			wasReady := jwtReady
			if err := fetchJWT(); err != nil {
				h.log.Warn("JWT-SVID not refreshed", "err", err)
			}
			if !wasReady && jwtReady {
				if err := startChild(); err != nil {
					return 0, err
				}
			}

		case err := <-ev.errs:
			if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
				continue
			}
			lastErr = err
			if status.Code(err) == codes.Unavailable && unreachableSince.IsZero() {
				unreachableSince = h.clock()
			}
			// One line per distinct problem, not one per retry.
			if msg := cfg.endpoint.explain(err).Error(); msg != lastLogged {
				lastLogged = msg
				h.log.Warn("no SVID update from meshid; retrying", "err", msg)
			}

		case <-ticker.C:
			now := h.clock()
			if !unreachableSince.IsZero() && now.Sub(unreachableSince) >= cfg.unreachable {
				code := stopChild(syscall.SIGTERM)
				h.log.Info("stopped program", "status", code)
				return code, fmt.Errorf("giving up after %s (-unreachable-timeout): %w",
					now.Sub(unreachableSince).Round(time.Second), cfg.endpoint.explain(lastErr))
			}
			if held == nil {
				continue
			}
			leaf := held.Certificates[0]
			if serial := leaf.SerialNumber.Text(16); serial != warnedStall && pastRenewal(leaf.NotBefore, leaf.NotAfter, now) {
				warnedStall = serial
				h.log.Warn("SVID is past 3/4 of its life and meshid has not renewed it: rotation has stalled",
					"spiffe_id", held.ID.String(), "serial", serial, "expires", relTime(leaf.NotAfter, now))
			}
		}
	}
}

// signalRenewal tells the program to reload: the pid in -pid-file if set,
// else the program started with -cmd.
func (h *helper) signalRenewal(child *exec.Cmd) {
	sig := h.cfg.renewSignal
	switch {
	case h.cfg.pidFile != "":
		b, err := os.ReadFile(h.cfg.pidFile)
		if err != nil {
			h.log.Warn("cannot signal: -pid-file unreadable", "err", err)
			return
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			h.log.Warn("cannot signal: -pid-file holds no pid", "file", h.cfg.pidFile, "content", strings.TrimSpace(string(b)))
			return
		}
		if err := syscall.Kill(pid, sig); err != nil {
			h.log.Warn("cannot signal the pid in -pid-file", "pid", pid, "signal", sig, "err", err)
			return
		}
		h.log.Info("signalled", "pid", pid, "signal", unix.SignalName(sig))
	case child != nil:
		if err := child.Process.Signal(sig); err != nil {
			h.log.Warn("cannot signal the program", "pid", child.Process.Pid, "err", err)
			return
		}
		h.log.Info("signalled", "pid", child.Process.Pid, "signal", unix.SignalName(sig))
	}
}

// fingerprint identifies what would be written, so a resend after a
// reconnect rewrites nothing and signals no one.
func fingerprint(s *x509svid.SVID, c *workloadapi.X509Context, federated bool) ([]byte, error) {
	b, err := bundlePEM(s, c.Bundles, federated)
	if err != nil {
		return nil, err
	}
	var fp []byte
	for _, cert := range s.Certificates {
		fp = append(fp, cert.Raw...)
	}
	return append(fp, b...), nil
}

// exitStatus is a program's exit code, 128+N when signal N killed it.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}
