package workloadcli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/helper"
	"github.com/meshid/meshid/internal/endpoint"
)

// newSVIDWatchCmd is helper mode. Its exit status is the managed
// program's when there is one.
func newSVIDWatchCmd() *cobra.Command {
	cmd, _ := svidWatchCmd()
	return cmd
}

// svidWatchCmd is svid watch and the flags its config is read from.
func svidWatchCmd() (*cobra.Command, *watchFlags) {
	cmd := &cobra.Command{
		Use:   "watch --write DIR [file flags] [--cmd PROG ARGS... | -- PROG ARGS...]",
		Short: "Keep SVID files fresh, signal or run the program that reads them",
		Long: `Helper mode: keep this process's SVID, key (0600) and bundle in DIR and
rewrite them atomically on every rotation meshid pushes. After each rewrite
send --renew-signal to the process whose pid is in --pid-file, or else to
PROG. Everything after --cmd (or after --) is the program to start once the
files exist, supervise (SIGINT or SIGTERM to the helper stops it with
SIGTERM, SIGKILL 10s later) and exit with; its own flags need no quoting.
With --jwt-audience, a JWT-SVID is kept in --jwt-file (0600), refetched at
half its life. Exit 1 when meshid has been unreachable for longer than
--unreachable-timeout, and warn when the SVID held is past 3/4 of its life
without renewal.`,
		Example: `  # nginx reads the files and reloads them on SIGHUP
  meshid svid watch --write /run/svid -- nginx -g 'daemon off;'
  meshid svid watch -write /run/svid -cmd nginx -g 'daemon off;'

  # signal a program started elsewhere; keep a JWT-SVID too
  meshid svid watch --write /run/svid --pid-file /run/app.pid --renew-signal SIGUSR1 \
      --jwt-audience payments --jwt-file token`,
	}
	f := &watchFlags{client: addClientFlags(cmd), files: addSVIDFileFlags(cmd)}
	flags := cmd.Flags()
	flags.StringVar(&f.files.JWT, "jwt-file", helper.DefaultJWTFile, "name of the JWT-SVID file in --write")
	flags.Var(&f.audiences, "jwt-audience", "also keep a JWT-SVID for this `audience` (repeat for several)")
	flags.StringVar(&f.signal, "renew-signal", unix.SignalName(helper.DefaultRenewSignal), "`signal` sent after each rewrite")
	flags.StringVar(&f.pidFile, "pid-file", "", "send --renew-signal to the pid in this `file` (read at each rotation)")
	flags.DurationVar(&f.exitAfter, "exit-after", 0, "exit (stopping PROG) after this long; 0 runs until signalled")
	flags.DurationVar(&f.unreachable, "unreachable-timeout", helper.DefaultUnreachableTimeout, "exit 1 once meshid has been unreachable this long")
	flags.Bool("cmd", false, "the rest of the command line is PROG ARGS..., the program to run (as after --)")
	_ = flags.SetAnnotation("cmd", cli.RestFlag, []string{"true"})
	_ = cmd.RegisterFlagCompletionFunc("renew-signal", cobra.FixedCompletions([]string{"SIGHUP", "SIGUSR1", "SIGUSR2"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := f.config(cmd, args)
		if err != nil {
			return err
		}
		code, err := runSVIDWatch(cmd.Context(), cfg, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		if code != 0 {
			return cli.ExitCode(code)
		}
		return nil
	}
	return cmd, f
}

func runSVIDWatch(ctx context.Context, cfg watchConfig, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c, err := cfg.endpoint.Client(ctx, workloadapi.WithBackoffStrategy(helper.Backoff{}))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	h := cfg.helper
	h.Source, h.Explain = c, cfg.endpoint.Explain
	h.Log = slog.New(slog.NewTextHandler(stderr, nil))
	h.Stdin, h.Stdout, h.Stderr = stdin, stdout, stderr
	return helper.Run(ctx, h)
}

// watchFlags are svid watch's flags as typed.
type watchFlags struct {
	client      *clientFlags
	files       *helper.Files
	audiences   audiences
	signal      string
	pidFile     string
	exitAfter   time.Duration
	unreachable time.Duration
}

// watchConfig is svid watch's command line, checked.
type watchConfig struct {
	endpoint endpoint.Endpoint
	helper   helper.Config
}

// config checks the flags and the program, args: what followed --cmd or
// "--" (which longFlags turns --cmd into).
func (f *watchFlags) config(cmd *cobra.Command, args []string) (watchConfig, error) {
	switch dash := cmd.Flags().ArgsLenAtDash(); {
	case dash < 0 && len(args) > 0, dash > 0:
		return watchConfig{}, cli.Usagef(cmd, "svid watch: unexpected argument %q (program arguments go after -cmd PROG, or after --)", args[0])
	case dash == 0 && len(args) == 0:
		return watchConfig{}, cli.Usagef(cmd, "svid watch: -cmd needs a program (-cmd PROG ARGS... or -- PROG ARGS...)")
	}
	if f.files.Dir == "" {
		return watchConfig{}, cli.Usagef(cmd, "svid watch: -write DIR is required")
	}
	s, err := parseSignal(f.signal)
	if err != nil {
		return watchConfig{}, cli.Usage(cmd, err)
	}
	e, err := f.client.endpoint()
	if err != nil {
		return watchConfig{}, err
	}
	return watchConfig{endpoint: e, helper: helper.Config{
		Files: *f.files, JWTAudiences: f.audiences, JWTTimeout: f.client.timeout,
		Cmd: args, RenewSignal: s, PIDFile: f.pidFile,
		ExitAfter: f.exitAfter, UnreachableTimeout: f.unreachable,
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
