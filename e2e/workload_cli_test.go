package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// uids of the CLI test: one with an entry, one without.
const (
	cliUID      = 1301
	strangerUID = 1302
	cliID       = "spiffe://example.org/cli/app"
)

// hupCounter counts SIGHUPs into $1 (rewritten atomically), exits 7 on
// SIGTERM, and writes $2 once its traps are set. It refuses to start
// without the SVID files in $3, as a program reading them would.
const hupCounter = `test -s "$3/svid.pem" && test -s "$3/svid_key.pem" && test -s "$3/bundle.pem" || exit 9
n=0
trap 'n=$((n+1)); echo $n > "$1.tmp"; mv "$1.tmp" "$1"' HUP
trap 'exit 7' TERM
echo ready > "$2"
while :; do sleep 0.05; done`

// TestWorkloadCLI runs meshid's client commands, as workloads under their
// own uids, against the real daemon: svid fetch, jwt fetch and validate,
// bundle show, healthcheck, and helper mode (svid watch) through a
// rotation, a daemon restart and a daemon that stays away.
func TestWorkloadCLI(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{X509TTL: 30 * time.Second, Entries: []harness.Entry{
		{SPIFFEID: cliID, Selectors: []string{"unix:uid:" + strconv.Itoa(cliUID)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cli := func(t *testing.T, uid uint32, args ...string) string {
		t.Helper()
		out, err := m.CLI(ctx, uid, args...)
		if err != nil {
			t.Fatalf("meshid %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	cliFails := func(t *testing.T, uid uint32, args ...string) string {
		t.Helper()
		out, err := m.CLI(ctx, uid, args...)
		if err == nil {
			t.Fatalf("meshid %s succeeded:\n%s", strings.Join(args, " "), out)
		}
		return out
	}

	t.Run("svid fetch", func(t *testing.T) {
		var r struct {
			SVIDs []struct {
				SPIFFEID  string `json:"spiffe_id"`
				ExpiresIn int64  `json:"expires_in_seconds"`
				Chain     []struct {
					URIs []string `json:"uri_sans"`
				} `json:"chain"`
			} `json:"svids"`
			Bundles []struct {
				TrustDomain string `json:"trust_domain"`
				Roots       []any  `json:"roots"`
			} `json:"bundles"`
		}
		out := cli(t, cliUID, "svid", "fetch", "-json")
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if len(r.SVIDs) != 1 || r.SVIDs[0].SPIFFEID != cliID || r.SVIDs[0].Chain[0].URIs[0] != cliID ||
			r.SVIDs[0].ExpiresIn <= 0 || r.SVIDs[0].ExpiresIn > 30 {
			t.Fatalf("svid fetch -json:\n%s", out)
		}
		if len(r.Bundles) != 1 || r.Bundles[0].TrustDomain != "example.org" || len(r.Bundles[0].Roots) == 0 {
			t.Fatalf("bundles:\n%s", out)
		}
		human := cli(t, cliUID, "svid", "fetch")
		for _, want := range []string{"SPIFFE ID  " + cliID + "\n", "Expires    in ", "Chain      ", "Bundle     example.org: "} {
			if !strings.Contains(human, want) {
				t.Errorf("human output lacks %q:\n%s", want, human)
			}
		}
		t.Logf("svid fetch:\n%s", human)
	})

	t.Run("svid fetch -write into a directory the uid cannot write", func(t *testing.T) {
		dir, err := env.MkdirAll("root-owned") // 0755 root: uid 1301 may not create files
		if err != nil {
			t.Fatal(err)
		}
		out := cliFails(t, cliUID, "svid", "fetch", "-write", dir)
		want := "write " + dir + "/svid.pem: permission denied (uid 1301 may not create files in " + dir + "; choose a directory it owns)"
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("left %d files behind", len(entries))
		}
	})

	t.Run("jwt fetch and validate", func(t *testing.T) {
		token := strings.TrimSpace(cli(t, cliUID, "jwt", "fetch", "-audience", "payments", "-token"))
		if strings.Count(token, ".") != 2 {
			t.Fatalf("not a JWT: %q", token)
		}
		// Validation needs no identity of the validator's own.
		out := cli(t, strangerUID, "jwt", "validate", "-audience", "payments", token)
		if !strings.Contains(out, "valid\nSPIFFE ID  "+cliID+"\nAudience   payments\nExpires    in ") {
			t.Fatalf("jwt validate:\n%s", out)
		}
		out = cliFails(t, strangerUID, "jwt", "validate", "-audience", "billing", token)
		if !strings.Contains(out, "InvalidArgument") || !strings.Contains(out, "audience") {
			t.Fatalf("wrong audience:\n%s", out)
		}
		out = cliFails(t, strangerUID, "jwt", "validate", "-audience", "payments", token[:len(token)-4]+"AAAA")
		if !strings.Contains(out, "invalid JWT-SVID") {
			t.Fatalf("forged signature:\n%s", out)
		}
	})

	t.Run("bundle show", func(t *testing.T) {
		out := cli(t, cliUID, "bundle", "show")
		if !strings.HasPrefix(out, "# spiffe://example.org\n-----BEGIN CERTIFICATE-----") {
			t.Fatalf("pem:\n%s", out)
		}
		var jwks struct {
			Keys []struct {
				Use string `json:"use"`
			} `json:"keys"`
		}
		out = cli(t, cliUID, "bundle", "show", "-format", "jwks")
		if err := json.Unmarshal([]byte(out), &jwks); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		uses := map[string]int{}
		for _, k := range jwks.Keys {
			uses[k.Use]++
		}
		if uses["x509-svid"] == 0 || uses["jwt-svid"] == 0 {
			t.Fatalf("jwks has %v, want x509-svid and jwt-svid keys:\n%s", uses, out)
		}
	})

	t.Run("healthcheck", func(t *testing.T) {
		out := cli(t, cliUID, "healthcheck")
		if !strings.Contains(out, "ok    daemon    serving at unix://"+m.SocketPath) || !strings.Contains(out, "ok    svid      "+cliID+" expires in ") {
			t.Fatalf("healthcheck:\n%s", out)
		}
	})

	t.Run("a uid without an entry is told so", func(t *testing.T) {
		out := cliFails(t, strangerUID, "svid", "fetch")
		if !strings.Contains(out, "meshid at unix://"+m.SocketPath+" refused: no identity issued") {
			t.Fatalf("svid fetch without an entry:\n%s", out)
		}
		out = cliFails(t, strangerUID, "healthcheck")
		if !strings.Contains(out, "ok    daemon") || !strings.Contains(out, "FAIL  svid      meshid at unix://"+m.SocketPath+" refused: no identity issued") {
			t.Fatalf("healthcheck without an entry:\n%s", out)
		}
	})

	t.Run("unreachable socket", func(t *testing.T) {
		out := cliFails(t, cliUID, "svid", "fetch", "-socket", "unix://"+env.Dir+"/nope.sock")
		if !strings.Contains(out, "is unreachable: no socket at "+env.Dir+"/nope.sock; check that `meshid run` is running") {
			t.Fatalf("output:\n%s", out)
		}
	})

	t.Run("svid watch", func(t *testing.T) {
		dir, err := env.OwnedDir(cliUID, "watch", "svid")
		if err != nil {
			t.Fatal(err)
		}
		state, err := env.OwnedDir(cliUID, "watch", "state")
		if err != nil {
			t.Fatal(err)
		}
		hups, ready := filepath.Join(state, "hups"), filepath.Join(state, "ready")
		w, err := m.StartCLI(ctx, cliUID, "svid", "watch", "-write", dir, "-unreachable-timeout", "5s",
			"-jwt-audience", "payments", "-jwt-file", "token", "-cmd", "sh", "-c", hupCounter, "counter", hups, ready, dir)
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(t, ctx, "the program to start on its files", func() bool { return exists(ready) })
		first := readCert(t, filepath.Join(dir, "svid.pem"))
		if first.URIs[0].String() != cliID {
			t.Fatalf("svid.pem is %s", first.URIs[0])
		}
		for _, secret := range []string{"svid_key.pem", "token"} {
			if fi, err := os.Stat(filepath.Join(dir, secret)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v %v", secret, fi, err)
			}
		}
		token, err := os.ReadFile(filepath.Join(dir, "token"))
		if err != nil {
			t.Fatal(err)
		}
		if out := cli(t, strangerUID, "jwt", "validate", "-audience", "payments", string(token)); !strings.Contains(out, "SPIFFE ID  "+cliID) {
			t.Fatalf("the helper's JWT-SVID:\n%s", out)
		}

		waitUntil(t, ctx, "a rotation to reach the program", func() bool { return readCount(hups) >= 1 })
		second := readCert(t, filepath.Join(dir, "svid.pem"))
		if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
			t.Fatal("SIGHUP without a new SVID on disk")
		}
		t.Logf("rotation: serial %x -> %x; helper wrote the files %v after meshid issued the SVID (their logs); program counted %d SIGHUP(s)",
			first.SerialNumber, second.SerialNumber, logTime(t, w.Logs(), "wrote SVID", second).Sub(logTime(t, m.Logs(), "issued X509-SVID", second)), readCount(hups))
		if out := cli(t, cliUID, "healthcheck", "-cert-file", filepath.Join(dir, "svid.pem")); !strings.Contains(out, "ok    cert-file") {
			t.Fatalf("healthcheck -cert-file:\n%s", out)
		}

		// A helper that stops listening (frozen here) leaves its file to
		// age: past 3/4 of the SVID's life healthcheck says rotation has
		// stalled. Thawed, the helper catches up and the check passes.
		if err := w.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stale := second.NotBefore.Add(second.NotAfter.Sub(second.NotBefore) / 4 * 3)
		time.Sleep(time.Until(stale) + 200*time.Millisecond)
		out, err := m.CLI(ctx, cliUID, "healthcheck", "-cert-file", filepath.Join(dir, "svid.pem"))
		if err == nil || !strings.Contains(out, "FAIL  cert-file") || !strings.Contains(out, "rotation has stalled") {
			w.Signal(syscall.SIGCONT)
			t.Fatalf("healthcheck on a stale file: %v\n%s", err, out)
		}
		if err := w.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, ctx, "the thawed helper to rewrite the file", func() bool {
			return readCert(t, filepath.Join(dir, "svid.pem")).SerialNumber.Cmp(second.SerialNumber) != 0
		})
		if out := cli(t, cliUID, "healthcheck", "-cert-file", filepath.Join(dir, "svid.pem")); !strings.Contains(out, "ok    cert-file") {
			t.Fatalf("healthcheck after the helper caught up:\n%s", out)
		}

		// meshid restarts: the helper reconnects and keeps the program.
		restarted := time.Now()
		if err := m.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, ctx, "the helper to reconnect", func() bool { return strings.Contains(w.Logs(), "meshid reachable again") })
		t.Logf("helper reconnected %v after the restart began", time.Since(restarted).Round(time.Millisecond))
		select {
		case <-w.Done():
			t.Fatalf("the helper exited across a restart:\n%s", w.Logs())
		default:
		}

		// meshid goes away for good: past -unreachable-timeout the helper
		// stops the program and exits 1 saying why.
		stopped := time.Now()
		if err := m.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w.Done():
		case <-ctx.Done():
			t.Fatal("the helper outlived an absent daemon")
		}
		took := time.Since(stopped)
		if err := w.Wait(); err == nil || !strings.Contains(err.Error(), "exit status 1") {
			t.Fatalf("helper exit: %v", err)
		}
		logs := w.Logs()
		for _, want := range []string{"giving up after", "(-unreachable-timeout): meshid at unix://" + m.SocketPath + " is unreachable", `msg="stopped program" status=7`} {
			if !strings.Contains(logs, want) {
				t.Errorf("helper log lacks %q:\n%s", want, logs)
			}
		}
		if took < 5*time.Second || took > 12*time.Second {
			t.Errorf("helper gave up %v after meshid stopped, want just past 5s", took)
		}
		t.Logf("helper gave up %v after meshid stopped; its log:\n%s", took.Round(time.Millisecond), logs)
	})
}

func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func readCount(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// logTime is when a log line with msg and c's serial was written.
func logTime(t *testing.T, logs, msg string, c *x509.Certificate) time.Time {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `msg="`+msg+`"`) || !strings.Contains(line, "serial="+c.SerialNumber.Text(16)) {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		return at
	}
	t.Fatalf("no %q log line for serial %x", msg, c.SerialNumber)
	return time.Time{}
}
