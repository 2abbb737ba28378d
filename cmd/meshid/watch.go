package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"

	"github.com/meshid/meshid/helper"
	"github.com/meshid/meshid/internal/endpoint"
)

// svidWatch is helper mode. Its exit status is the managed program's when
// there is one.
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

func runSVIDWatch(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	cfg, err := parseWatchFlags(args, stderr)
	if err != nil {
		return 0, err
	}
	c, err := cfg.endpoint.Client(ctx, workloadapi.WithBackoffStrategy(helper.Backoff{}))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	h := cfg.helper
	h.Source, h.Explain = c, cfg.endpoint.Explain
	h.Log = slog.New(slog.NewTextHandler(stderr, nil))
	h.Stdin, h.Stdout, h.Stderr = os.Stdin, stdout, stderr
	return helper.Run(ctx, h)
}

// watchConfig is svid watch's flags, parsed.
type watchConfig struct {
	endpoint endpoint.Endpoint
	helper   helper.Config
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
	flags.StringVar(&files.JWT, "jwt-file", helper.DefaultJWTFile, "name of the JWT-SVID file in -write")
	var aud audiences
	flags.Var(&aud, "jwt-audience", "also keep a JWT-SVID for this audience (repeat for several)")
	sig := flags.String("renew-signal", unix.SignalName(helper.DefaultRenewSignal), "signal sent after each rewrite")
	pidFile := flags.String("pid-file", "", "send -renew-signal to the pid in this file (read at each rotation)")
	exitAfter := flags.Duration("exit-after", 0, "exit (stopping PROG) after this long; 0 runs until signalled")
	unreachable := flags.Duration("unreachable-timeout", helper.DefaultUnreachableTimeout, "exit 1 once meshid has been unreachable this long")
	if err := flags.Parse(args); err != nil {
		return watchConfig{}, err
	}
	if flags.NArg() > 0 {
		flags.Usage()
		return watchConfig{}, fmt.Errorf("svid watch: unexpected argument %q (program arguments go after -cmd PROG)", flags.Arg(0))
	}
	if files.Dir == "" {
		flags.Usage()
		return watchConfig{}, errors.New("svid watch: -write DIR is required")
	}
	e, err := ep.endpoint()
	if err != nil {
		return watchConfig{}, err
	}
	s, err := parseSignal(*sig)
	if err != nil {
		return watchConfig{}, err
	}
	return watchConfig{endpoint: e, helper: helper.Config{
		Files: *files, JWTAudiences: aud, JWTTimeout: *ep.timeout,
		Cmd: cmd, RenewSignal: s, PIDFile: *pidFile,
		ExitAfter: *exitAfter, UnreachableTimeout: *unreachable,
	}}, nil
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
