package helper

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/syncbuf"
)

// fakeProgram records what the handlers ask of the program.
type fakeProgram struct {
	startErr error
	running  bool
	signals  []os.Signal
	stops    int
	status   int // what stop and exitStatus report
}

func (p *fakeProgram) start() error {
	if p.startErr != nil {
		return p.startErr
	}
	p.running = true
	return nil
}
func (p *fakeProgram) started() bool { return p.running }
func (p *fakeProgram) signal(sig os.Signal) error {
	p.signals = append(p.signals, sig)
	return nil
}
func (p *fakeProgram) pid() int        { return 4242 }
func (p *fakeProgram) stop() int       { p.stops++; return p.status }
func (p *fakeProgram) exitStatus() int { return p.status }

// stateWorld is a state on a fake clock, program and -pid-file signal.
type stateWorld struct {
	s     *state
	prog  *fakeProgram
	src   *fakeSource
	log   *syncbuf.Buffer
	now   time.Time
	kills []string // "pid signal"
	dir   string
}

func newStateWorld(t *testing.T, edit func(*Config)) *stateWorld {
	t.Helper()
	w := &stateWorld{
		prog: &fakeProgram{status: 7},
		src:  newFakeSource(),
		log:  &syncbuf.Buffer{},
		now:  time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		dir:  t.TempDir(),
	}
	cfg := Config{
		Files:              Files{Dir: w.dir},
		UnreachableTimeout: 30 * time.Second,
		Source:             w.src,
		Explain:            func(err error) error { return errors.New("explained: " + status.Convert(err).Message()) },
		Log:                slog.New(slog.NewTextHandler(w.log, nil)),
		Clock:              func() time.Time { return w.now },
	}
	if edit != nil {
		edit(&cfg)
	}
	w.s = newState(cfg.withDefaults(), w.prog)
	w.s.kill = func(pid int, sig syscall.Signal) error {
		w.kills = append(w.kills, strconv.Itoa(pid)+" "+sig.String())
		return nil
	}
	return w
}

func (w *stateWorld) logged(msg string) int { return strings.Count(w.log.String(), `msg="`+msg+`"`) }

func TestOnWatchError(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "connection refused")
	refused := status.Error(codes.PermissionDenied, "no identity issued: no entry matches [unix:uid:1301]")
	tests := []struct {
		name            string
		errs            []error
		wantUnreachable bool
		wantLines       int
		wantLog         string
	}{
		{"cancellation is no failure", []error{status.Error(codes.Canceled, "x"), context.Canceled}, false, 0, ""},
		{"unavailable starts the clock", []error{unavailable}, true, 1, "explained: connection refused"},
		{"a retried failure is logged once", []error{unavailable, unavailable, unavailable}, true, 1, ""},
		{"a refusal is not unreachable", []error{refused, refused}, false, 1, "explained: no identity issued: no entry matches [unix:uid:1301]"},
		{"a refusal after unavailable: meshid answers again", []error{unavailable, refused}, false, 2, ""},
		{"unavailable after a refusal", []error{refused, unavailable}, true, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newStateWorld(t, nil)
			start := w.now
			for _, err := range tt.errs {
				w.s.onWatchError(err)
				w.now = w.now.Add(time.Second)
			}
			if got := !w.s.unreachableSince.IsZero(); got != tt.wantUnreachable {
				t.Fatalf("unreachable = %v (since %v), want %v", got, w.s.unreachableSince, tt.wantUnreachable)
			}
			if tt.wantUnreachable && tt.errs[0] == unavailable && !w.s.unreachableSince.Equal(start) {
				t.Fatalf("unreachable since %v, want the first failure's time %v", w.s.unreachableSince, start)
			}
			if n := w.logged("no SVID update from meshid; retrying"); n != tt.wantLines {
				t.Fatalf("%d log lines, want %d:\n%s", n, tt.wantLines, w.log.String())
			}
			if !strings.Contains(w.log.String(), tt.wantLog) {
				t.Fatalf("log lacks %q:\n%s", tt.wantLog, w.log.String())
			}
		})
	}
}

func TestOnTick(t *testing.T) {
	ca := newTestCA(t, "example.org")
	tests := []struct {
		name        string
		unreachable time.Duration // how long before now meshid went away; 0: it answers
		started     bool
		svidAge     time.Duration // of a 40s SVID held; 0: none held
		wantCode    int
		wantErr     string
		wantStall   bool
	}{
		{"all well", 0, true, 10 * time.Second, 0, "", false},
		{"unreachable, not for long", 29 * time.Second, true, 10 * time.Second, 0, "", false},
		{"unreachable too long stops the program", 30 * time.Second, true, 0, 7,
			"giving up after 30s (-unreachable-timeout): explained: connection refused", false},
		{"unreachable too long, no program", 31 * time.Second, false, 0, 0, "giving up after 31s", false},
		{"past 3/4 of its life", 0, true, 30 * time.Second, 0, "", true},
		{"expired and never renewed", 0, true, time.Minute, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newStateWorld(t, nil)
			w.prog.running = tt.started
			if tt.unreachable > 0 {
				w.s.onWatchError(status.Error(codes.Unavailable, "connection refused"))
				w.now = w.now.Add(tt.unreachable)
			}
			if tt.svidAge > 0 {
				nb := w.now.Add(-tt.svidAge)
				w.s.held = ca.svid(t, "/app", nb, nb.Add(40*time.Second))
			}
			for range 2 {
				o := w.s.onTick()
				if tt.wantErr == "" {
					if o != nil {
						t.Fatalf("onTick = %+v, want the helper to go on", o)
					}
					continue
				}
				if o == nil || o.err == nil || !strings.Contains(o.err.Error(), tt.wantErr) || o.code != tt.wantCode {
					t.Fatalf("onTick = %+v, want code %d and %q", o, tt.wantCode, tt.wantErr)
				}
				if want := map[bool]int{true: 1, false: 0}[tt.started]; w.prog.stops != want || w.logged("stopped program") != want {
					t.Fatalf("program stopped %d times, logged %d; want %d", w.prog.stops, w.logged("stopped program"), want)
				}
				return
			}
			want := map[bool]int{true: 1, false: 0}[tt.wantStall]
			if n := w.logged("SVID is past 3/4 of its life and meshid has not renewed it: rotation has stalled"); n != want {
				t.Fatalf("%d stall warnings over two ticks, want %d:\n%s", n, want, w.log.String())
			}
		})
	}
}

func TestOnX509Update(t *testing.T) {
	ca := newTestCA(t, "example.org")
	other := newTestCA(t, "other.org")
	first, second := ca.fresh(t), ca.fresh(t)
	bothRoots := x509bundle.NewSet(ca.bundles().Bundles()[0], other.bundles().Bundles()[0])
	tests := []struct {
		name        string
		cfg         func(c *Config, dir string)
		setup       func(t *testing.T, dir string)
		beforeLast  func(t *testing.T, dir string)
		updates     []*workloadapi.X509Context
		wantOnDisk  int // the update whose SVID svid.pem holds; -1: none
		wantWrites  int
		wantStarted bool
		wantSignals int      // to the program
		wantKills   []string // to the -pid-file pid
		wantErr     string   // of the last update's outcome
		wantLog     string
	}{
		{name: "first write starts the program, unsignalled",
			cfg:     func(c *Config, _ string) { c.Cmd = []string{"prog"} },
			updates: []*workloadapi.X509Context{ca.context(first)}, wantWrites: 1, wantStarted: true},
		{name: "a resend after a reconnect writes and signals nothing",
			cfg:     func(c *Config, _ string) { c.Cmd = []string{"prog"} },
			updates: []*workloadapi.X509Context{ca.context(first), ca.context(first)}, wantWrites: 1, wantStarted: true},
		{name: "a rotation signals the program once",
			cfg:     func(c *Config, _ string) { c.Cmd = []string{"prog"} },
			updates: []*workloadapi.X509Context{ca.context(first), ca.context(first), ca.context(second)}, wantWrites: 2, wantStarted: true, wantSignals: 1, wantOnDisk: 2},
		{name: "a new root is a rewrite too",
			cfg:        func(c *Config, _ string) { c.Cmd = []string{"prog"}; c.Files.Federated = true },
			updates:    []*workloadapi.X509Context{ca.context(first), {SVIDs: []*x509svid.SVID{first}, Bundles: bothRoots}},
			wantWrites: 2, wantStarted: true, wantSignals: 1},
		{name: "-pid-file is signalled on the first write and each rotation",
			cfg: func(c *Config, dir string) {
				c.PIDFile = filepath.Join(dir, "pid")
				os.WriteFile(c.PIDFile, []byte("31337\n"), 0o644)
			},
			updates: []*workloadapi.X509Context{ca.context(first), ca.context(second)}, wantWrites: 2, wantOnDisk: 1,
			wantKills: []string{"31337 hangup", "31337 hangup"}},
		{name: "a -pid-file without a pid is logged",
			cfg: func(c *Config, dir string) {
				c.PIDFile = filepath.Join(dir, "pid")
				os.WriteFile(c.PIDFile, []byte("nginx\n"), 0o644)
			},
			updates: []*workloadapi.X509Context{ca.context(first)}, wantWrites: 1, wantLog: "cannot signal: -pid-file holds no pid"},
		{name: "an update without the SVID's bundle is not used",
			updates:    []*workloadapi.X509Context{{SVIDs: []*x509svid.SVID{first}, Bundles: other.bundles()}},
			wantOnDisk: -1, wantLog: "meshid sent no bundle for example.org"},
		{name: "the first write failing ends the helper before the program starts",
			cfg:     func(c *Config, _ string) { c.Cmd = []string{"prog"} },
			setup:   func(t *testing.T, dir string) { os.Mkdir(filepath.Join(dir, "svid_key.pem"), 0o755) },
			updates: []*workloadapi.X509Context{ca.context(first)}, wantOnDisk: -1, wantErr: "svid_key.pem: replace it"},
		{name: "a later write failing keeps the helper, unsignalled",
			cfg: func(c *Config, _ string) { c.Cmd = []string{"prog"} },
			beforeLast: func(t *testing.T, dir string) {
				// The bundle's name is taken now: the cert and key are
				// rewritten, the bundle is not.
				os.Remove(filepath.Join(dir, "bundle.pem"))
				os.Mkdir(filepath.Join(dir, "bundle.pem"), 0o755)
			},
			updates: []*workloadapi.X509Context{ca.context(first), ca.context(second)}, wantWrites: 1, wantStarted: true, wantOnDisk: 1,
			wantLog: `msg="cannot rewrite the SVID files; not signalling"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dir string
			w := newStateWorld(t, func(c *Config) {
				dir = c.Files.Dir
				if tt.cfg != nil {
					tt.cfg(c, dir)
				}
			})
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			var o *outcome
			for i, u := range tt.updates {
				if tt.beforeLast != nil && i == len(tt.updates)-1 {
					tt.beforeLast(t, dir)
				}
				if o = w.s.onX509Update(t.Context(), u); o != nil && i < len(tt.updates)-1 {
					t.Fatalf("update %d ended the helper: %+v", i, o)
				}
			}
			switch {
			case tt.wantErr == "" && o != nil:
				t.Fatalf("outcome %+v, want the helper to go on", o)
			case tt.wantErr != "" && (o == nil || o.err == nil || !strings.Contains(o.err.Error(), tt.wantErr)):
				t.Fatalf("outcome %+v, want %q", o, tt.wantErr)
			}
			if n := w.logged("wrote SVID"); n != tt.wantWrites {
				t.Errorf("%d writes, want %d:\n%s", n, tt.wantWrites, w.log.String())
			}
			if w.prog.running != tt.wantStarted || len(w.prog.signals) != tt.wantSignals {
				t.Errorf("program started %v signalled %v; want %v and %d signals", w.prog.running, w.prog.signals, tt.wantStarted, tt.wantSignals)
			}
			if strings.Join(w.kills, ",") != strings.Join(tt.wantKills, ",") {
				t.Errorf("-pid-file signals %v, want %v", w.kills, tt.wantKills)
			}
			if !strings.Contains(w.log.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, w.log.String())
			}
			switch want := tt.wantOnDisk; {
			case want < 0:
				if fileExists(filepath.Join(dir, "svid.pem")) && tt.wantErr == "" {
					t.Errorf("svid.pem written")
				}
			default:
				if got := onDisk(t, dir); !got.Certificates[0].Equal(tt.updates[want].DefaultSVID().Certificates[0]) {
					t.Errorf("svid.pem is not the SVID of update %d", want)
				}
			}
		})
	}
}

func TestOnX509UpdateAfterAnOutage(t *testing.T) {
	ca := newTestCA(t, "example.org")
	w := newStateWorld(t, nil)
	w.s.onWatchError(status.Error(codes.Unavailable, "connection refused"))
	w.now = w.now.Add(2300 * time.Millisecond)
	if o := w.s.onX509Update(t.Context(), ca.context(ca.fresh(t))); o != nil {
		t.Fatal(o.err)
	}
	if !w.s.unreachableSince.IsZero() || w.s.lastErr != nil || !strings.Contains(w.log.String(), `msg="meshid reachable again" after=2.3s`) {
		t.Fatalf("since %v, last error %v, log:\n%s", w.s.unreachableSince, w.s.lastErr, w.log.String())
	}
	// The next failure is logged again, not taken for the old one.
	w.s.onWatchError(status.Error(codes.Unavailable, "connection refused"))
	if n := w.logged("no SVID update from meshid; retrying"); n != 2 {
		t.Fatalf("%d failure lines, want 2", n)
	}
}

func TestJWTHandlers(t *testing.T) {
	ca := newTestCA(t, "example.org")
	token := testJWT(t, "spiffe://example.org/app", "payments", 10*time.Minute)
	tests := []struct {
		name        string
		results     []error // of the fetch at the first write, then at each due time
		wantStarted []bool  // after each of them
		wantDue     []time.Duration
	}{
		{"fetched at the first write, then at half its life", []error{nil, nil}, []bool{true, true}, []time.Duration{5 * time.Minute, 5 * time.Minute}},
		{"the program waits for the token; retried every 2s", []error{errUnavailable, errUnavailable, nil}, []bool{false, false, true}, []time.Duration{2 * time.Second, 2 * time.Second, 5 * time.Minute}},
		{"a failed refresh keeps the program", []error{nil, errUnavailable}, []bool{true, true}, []time.Duration{5 * time.Minute, 2 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newStateWorld(t, func(c *Config) {
				c.Cmd = []string{"prog"}
				c.JWTAudiences = []string{"payments"}
				c.Files.JWT = "token"
			})
			var call int
			w.src.jwt = func() (*jwtsvid.SVID, error) {
				defer func() { call++ }()
				if err := tt.results[call]; err != nil {
					return nil, err
				}
				// Half of what is left of the token's life, on the fake clock.
				w.now = token.Expiry.Add(-10 * time.Minute)
				return token, nil
			}
			for i := range tt.results {
				var o *outcome
				if i == 0 {
					o = w.s.onX509Update(t.Context(), ca.context(ca.fresh(t)))
				} else {
					w.now = w.s.jwtDue
					o = w.s.onJWTDue(t.Context())
				}
				if o != nil {
					t.Fatalf("step %d ended the helper: %+v", i, o)
				}
				if w.prog.running != tt.wantStarted[i] {
					t.Fatalf("step %d: program started %v, want %v", i, w.prog.running, tt.wantStarted[i])
				}
				if got := w.s.jwtDue.Sub(w.now); got != tt.wantDue[i] {
					t.Fatalf("step %d: next fetch in %v, want %v", i, got, tt.wantDue[i])
				}
			}
			if b, err := os.ReadFile(filepath.Join(w.dir, "token")); err != nil || string(b) != token.Marshal() {
				t.Fatalf("token file: %q %v", b, err)
			}
			if len(w.prog.signals) != 0 {
				t.Fatalf("JWT rewrites signalled the program: %v", w.prog.signals)
			}
		})
	}
}

var errUnavailable = status.Error(codes.Unavailable, "issue JWT-SVID: no key yet")

func TestEndings(t *testing.T) {
	tests := []struct {
		name     string
		started  bool
		handle   func(*state) *outcome
		wantCode int
		wantErr  string
		wantLog  string
	}{
		{"a signal stops the program and exits as it does", true, (*state).onSignal, 7, "", `msg="stopped program" status=7`},
		{"a signal without a program", false, (*state).onSignal, 0, "", ""},
		{"-exit-after", true, (*state).onExitAfter, 7, "", "exiting after -exit-after"},
		{"the program exits", true, (*state).onProgramExit, 7, "", `msg="program exited" status=7`},
		{"the stream ends for good", true, func(s *state) *outcome {
			return s.onWatchEnd(status.Error(codes.InvalidArgument, "security header missing from request"))
		}, 7, "meshid ended the SVID stream: explained: security header missing from request", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newStateWorld(t, nil)
			w.prog.running = tt.started
			o := tt.handle(w.s)
			if o == nil || o.code != tt.wantCode || (tt.wantErr == "") != (o.err == nil) || (o.err != nil && o.err.Error() != tt.wantErr) {
				t.Fatalf("outcome %+v, want code %d err %q", o, tt.wantCode, tt.wantErr)
			}
			if !strings.Contains(w.log.String(), tt.wantLog) {
				t.Fatalf("log lacks %q:\n%s", tt.wantLog, w.log.String())
			}
		})
	}
}
