package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/meshid/meshid/attestor"
)

// Huge audiences fill the JWT cache's byte budget long before its count:
// tokens are still issued, the cache stays within the budget, and its
// account of its size stays true through renewals and expiry.
func TestJWTCacheIsBoundedByBytes(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	sub, _ := m.Watch(context.Background(), caller(1102)) // jwt_ttl: 2m
	defer sub.Close()

	const n, audSize = 50, 64 << 10 // 3 MiB of audiences, held twice over by the cache, and a token of each
	issued := 0
	for i := range n {
		aud := fmt.Sprintf("%d-%s", i, strings.Repeat("a", audSize))
		svids, err := sub.JWTSVIDs([]string{aud})
		if err != nil {
			t.Fatal(err)
		}
		if len(svids[0].Token) < audSize || len(svids[0].Audience) != 1 || svids[0].Audience[0] != aud {
			t.Fatalf("token %d: %d bytes for audiences %d bytes long", i, len(svids[0].Token), len(svids[0].Audience[0]))
		}
		issued++
	}
	small, err := sub.JWTSVIDs([]string{"api"})
	if err != nil || len(small) != 1 {
		t.Fatalf("with the cache full, a small token: %v, %v", small, err)
	}

	check := func(when string) {
		t.Helper()
		m.mu.Lock()
		defer m.mu.Unlock()
		var sum, strs int
		for k, svid := range m.jwts {
			sum += jwtCost(k, svid)
			strs += len(k.audience) + len(svid.Token) // what the audiences cost, counted afresh
		}
		if sum != m.jwtBytes {
			t.Errorf("%s: the cache counts %d bytes, its entries cost %d", when, m.jwtBytes, sum)
		}
		if m.jwtBytes > maxCachedJWTBytes || strs > maxCachedJWTBytes {
			t.Errorf("%s: cache holds %d bytes (%d of audiences and tokens), budget %d", when, m.jwtBytes, strs, maxCachedJWTBytes)
		}
		t.Logf("%s: %d of %d tokens cached, %d bytes", when, len(m.jwts), issued, m.jwtBytes)
	}
	check("full")
	m.mu.Lock()
	cached := len(m.jwts)
	m.mu.Unlock()
	if cached == 0 || cached >= n {
		t.Fatalf("%d of %d huge tokens cached: want the budget, not the count, to stop the cache", cached, n)
	}

	clk.Add(time.Minute) // half of 2m: every token is renewed on demand
	for i := range 10 {
		if _, err := sub.JWTSVIDs([]string{fmt.Sprintf("%d-%s", i, strings.Repeat("a", audSize))}); err != nil {
			t.Fatal(err)
		}
	}
	check("after renewals")
	clk.Add(2 * time.Minute)
	m.renewDue()
	m.mu.Lock()
	left, bytes := len(m.jwts), m.jwtBytes
	m.mu.Unlock()
	if left != 0 || bytes != 0 {
		t.Fatalf("after every token expired: %d cached, %d bytes counted", left, bytes)
	}
}

// One caller asking to be refused thousands of times writes one WARN line
// per uid and reason every refusalInterval, and the next line says how
// many were left out; the metrics count them all.
func TestRefusalsAreLoggedOncePerIntervalPerUIDAndReason(t *testing.T) {
	var logs bytes.Buffer
	clk := &clock{now: time.Now()}
	m := newManager(t, clk, slog.New(slog.NewTextHandler(&logs, nil)))
	lines := func(substr string) []string {
		var out []string
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, substr) {
				out = append(out, l)
			}
		}
		logs.Reset()
		return out
	}

	for range 5000 {
		sub, err := m.Watch(context.Background(), caller(4242))
		if err != nil {
			t.Fatal(err)
		}
		sub.Close()
	}
	sub, _ := m.Watch(context.Background(), caller(4343)) // another uid is logged at once
	sub.Close()
	if got := lines("no entry matches caller"); len(got) != 2 || !strings.Contains(got[0], "uid=4242") || !strings.Contains(got[1], "uid=4343") ||
		!strings.Contains(got[0], "unlogged_refusals=0") {
		t.Fatalf("5,000 refusals of uid 4242 and one of 4343 logged as:\n%s", strings.Join(got, ""))
	}
	clk.Add(refusalInterval - time.Millisecond)
	sub, _ = m.Watch(context.Background(), caller(4242))
	sub.Close()
	if got := lines("no entry matches caller"); len(got) != 0 {
		t.Fatalf("logged again before the interval passed:\n%s", strings.Join(got, ""))
	}
	clk.Add(time.Millisecond)
	sub, _ = m.Watch(context.Background(), caller(4242))
	sub.Close()
	if got := lines("no entry matches caller"); len(got) != 1 || !strings.Contains(got[0], "unlogged_refusals=5000") || !strings.Contains(got[0], "unix:uid:4242") {
		t.Fatalf("after the interval, want one line saying 5000 went unlogged, got:\n%s", strings.Join(got, ""))
	}
	if n := value(m.metrics.unmatched); n != 5003 {
		t.Errorf("meshid_unmatched_callers_total = %v, want 5003", n)
	}

	// Attestation failures: limited per reason, a new reason is logged.
	reasons := &reasonAttestor{reason: attestor.ReasonExited}
	m.attestor = reasons
	for range 1000 {
		m.Watch(context.Background(), caller(4242))
	}
	reasons.reason = attestor.ReasonPIDReused
	m.Watch(context.Background(), caller(4242))
	got := lines("attestation failed")
	if len(got) != 2 || !strings.Contains(got[0], "reason=process_exited") || !strings.Contains(got[1], "reason=pid_reused") {
		t.Fatalf("1,000 failures for one reason and one for another logged as:\n%s", strings.Join(got, ""))
	}
	if n := value(m.metrics.attestFailures.WithLabelValues(attestor.ReasonExited)); n != 1000 {
		t.Errorf("meshid_attestation_failures_total{reason=process_exited} = %v, want 1000", n)
	}
}

// reasonAttestor fails every attestation with its reason.
type reasonAttestor struct{ reason string }

func (a *reasonAttestor) Attest(context.Context, attestor.Caller) ([]attestor.Selector, error) {
	return nil, &attestor.Error{Reason: a.reason, Err: errors.New("pid 100: " + a.reason)}
}

// What a caller presents is its own to choose; a log line holds a bounded
// part of it.
func TestLoggedSelectorsAreBounded(t *testing.T) {
	huge := attestor.Selector{Type: "docker", Value: "env:X=" + strings.Repeat("é", 1<<19)} // 1 MiB
	got := loggedSelectors([]attestor.Selector{huge})
	if len(got) != 1 || len(got[0]) > maxEcho+32 || !strings.HasSuffix(got[0], fmt.Sprintf("… (%d bytes)", len(huge.String()))) {
		t.Fatalf("a 1 MiB selector logged as %d bytes: %.300q", len(got[0]), got[0])
	}
	if !strings.HasPrefix(got[0], "docker:env:X=éé") || !utf8.ValidString(got[0]) {
		t.Errorf("cut selector %.300q", got[0])
	}
	many := make([]attestor.Selector, 1000)
	for i := range many {
		many[i] = attestor.Selector{Type: "docker", Value: fmt.Sprintf("label:l%d:v", i)}
	}
	if got := loggedSelectors(many); len(got) != maxLoggedSelectors+1 || got[maxLoggedSelectors] != "… and 936 more" {
		t.Fatalf("1000 selectors logged as %d, ending %q", len(got), got[len(got)-1])
	}
}

// A token for a huge audience is still a valid token.
func TestHugeAudienceTokenValidates(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	sub, _ := m.Watch(context.Background(), caller(1101))
	defer sub.Close()
	aud := strings.Repeat("x", 1<<19)
	svids, err := sub.JWTSVIDs([]string{aud})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(svids[0].Token, sub.JWTBundles(), []string{aud}); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.jwts) != 1 {
		t.Errorf("a 512 KiB audience's token is within the budget: %d cached, want 1", len(m.jwts))
	}
}

// A subscription's Exited is its caller's: closed when the process that
// connected exits.
func TestSubscriptionExitedFollowsTheCallersProcess(t *testing.T) {
	if sock := os.Getenv("MESHID_IDENTITY_TEST_DIAL"); sock != "" {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(3)
		}
		io.Copy(io.Discard, conn) // until killed
		os.Exit(0)
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSubscriptionExitedFollowsTheCallersProcess$")
	cmd.Env = append(os.Environ(), "MESHID_IDENTITY_TEST_DIAL="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	raw, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn, info, err := attestor.PeerCredentials().ServerHandshake(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := attestor.CallerFromAuthInfo(info)
	if err != nil || c.PID != int32(cmd.Process.Pid) {
		t.Fatalf("caller %+v, %v; want the child, pid %d", c, err, cmd.Process.Pid)
	}

	m := newManager(t, &clock{now: time.Now()}, nil)
	if m.attestor, err = attestor.New(attestor.Options{}); err != nil {
		t.Fatal(err)
	}
	sub, err := m.Watch(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	select {
	case <-sub.Exited():
		t.Fatal("Exited closed while the caller is alive")
	default:
	}
	cmd.Process.Kill()
	select {
	case <-sub.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("Exited not closed 5s after the caller was killed")
	}
	if sub, err := m.Watch(context.Background(), c); attestor.Reason(err) != attestor.ReasonExited {
		if sub != nil {
			sub.Close()
		}
		t.Fatalf("Watch of the exited caller = %v, want reason %s", err, attestor.ReasonExited)
	}
}
