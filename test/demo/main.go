// Command demo runs the local demo mesh for `make demo`: meshid, two real
// Envoy sidecars and two tiny apps on loopback. It shows the identities
// meshid issued, a request the policy allows (and who the backend saw
// calling), one it denies (and `meshid policy why` on its decision id), a
// process no entry names getting no identity, and a live SVID rotation
// under traffic, then where its logs are kept. It keeps the mesh up until
// Ctrl-C, or exits after all of them when DEMO_ONESHOT=1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshid/meshid/test/harness"
)

func main() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, `make demo needs root: it starts each Envoy and app under its own uid
(1101, 1102, 1201, 1202) so that meshid can tell the workloads apart by what
the kernel says about them (SO_PEERCRED), which is the point of the demo.
Run it as root, e.g.: sudo make demo`)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demoTTL is the sidecars' SVID lifetime in the demo: short, so that the
// demo sees one renewed (at about half of it) within seconds.
const demoTTL = 20 * time.Second

// unregisteredUID is a uid no demo entry names.
const unregisteredUID = 1301

func run(ctx context.Context) error {
	began := time.Now()
	env, err := harness.New(ctx, harness.Options{KeepDir: true, Logf: func(format string, args ...any) {
		fmt.Printf("  · "+format+"\n", args...)
	}})
	if err != nil {
		return err
	}
	defer env.Close()
	fail := func(err error) error {
		env.Fail()
		return fmt.Errorf("%w (logs in %s/logs)", err, env.Dir)
	}

	fmt.Println("starting the demo mesh: meshid, two Envoy sidecars, two apps")
	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{X509TTL: demoTTL, ExplainDenials: true})
	if err != nil {
		return fail(err)
	}
	m := mesh.Meshid
	fmt.Println()
	fmt.Println(mesh)

	step("1. the identities meshid issued, as each sidecar holds them (Envoy admin /certs)")
	sidecars := []struct {
		name  string
		envoy *harness.Envoy
		id    string
		uid   int
	}{{"frontend envoy", mesh.Frontend, harness.FrontendID, harness.FrontendEnvoyUID}, {"backend envoy", mesh.Backend, harness.BackendID, harness.BackendEnvoyUID}}
	first := map[string]harness.Cert{}
	for _, s := range sidecars {
		c, err := s.envoy.SVID(ctx, s.id)
		if err != nil {
			return fail(err)
		}
		first[s.id] = c
		fmt.Printf("  %-15s uid %d  %s\n  %-15s serial %s, expires %s (in %s)\n", s.name, s.uid, s.id, "", c.SerialNumber, c.ExpirationTime.UTC().Format(time.RFC3339), time.Until(c.ExpirationTime).Round(time.Second))
	}

	step("2. allowed: the policy lets the frontend GET /hello")
	status, _, body, err := request(ctx, mesh.FrontendURL+"hello")
	if err != nil {
		return fail(err)
	}
	var seen struct{ Peer string }
	if err := json.Unmarshal([]byte(body), &seen); err != nil || status != http.StatusOK || seen.Peer != harness.FrontendID {
		return fail(fmt.Errorf("GET /hello: %d %s, want 200 from the backend seeing %s", status, body, harness.FrontendID))
	}
	fmt.Printf("the backend saw the caller as %s, the SPIFFE ID its sidecar verified over mTLS\n", seen.Peer)

	step("3. denied: any other path is refused by meshid's ext_authz, and meshid says why")
	status, id, _, err := request(ctx, mesh.FrontendURL+"admin")
	if err != nil {
		return fail(err)
	}
	if status != http.StatusForbidden || id == "" {
		return fail(fmt.Errorf("GET /admin: %d with decision id %q, want 403 with one", status, id))
	}
	fmt.Printf("decision id %s (the x-meshid-decision-id header)\n", id)
	if _, err := m.WaitDecision(ctx, id); err != nil {
		return fail(err)
	}
	fmt.Printf("$ meshid policy why -config %s %s\n", m.ConfigPath, id)
	out, err := m.PolicyWhy(ctx, id)
	fmt.Println(indent(strings.TrimSpace(out)))
	if err != nil {
		return fail(fmt.Errorf("policy why: %w", err))
	}

	step(fmt.Sprintf("4. a process no entry names (uid %d) asks meshid for an identity and gets none", unregisteredUID))
	fmt.Println("$ meshid svid fetch")
	out, err = m.CLI(ctx, unregisteredUID, "svid", "fetch")
	fmt.Println(indent(strings.TrimSpace(out)))
	if err == nil {
		return fail(fmt.Errorf("svid fetch as uid %d succeeded, want a refusal: no identity issued", unregisteredUID))
	}
	if !strings.Contains(out, "no identity issued") {
		return fail(fmt.Errorf("svid fetch as uid %d: %w, want a refusal: no identity issued", unregisteredUID, err))
	}

	step(fmt.Sprintf("5. a live SVID rotation (TTL %s, renewed at about half of it) under traffic", demoTTL))
	if err := rotation(ctx, first, sidecars[0].envoy, sidecars[1].envoy, mesh.FrontendURL+"hello"); err != nil {
		return fail(err)
	}

	step("6. where the demo's files are (kept after it exits)")
	fmt.Printf("  logs of every process: %s/logs\n  decision log:          %s\n  policy revisions:      %s/data/policies\n  remove them with:      rm -rf %s\n", env.Dir, m.DecisionLogPath, m.Dir, env.Dir)

	if os.Getenv("DEMO_ONESHOT") != "" {
		fmt.Printf("\ndemo done in %s\n", time.Since(began).Round(100*time.Millisecond))
		return nil
	}
	fmt.Println("\nthe mesh keeps running for more requests (see \"try:\" above); Ctrl-C stops it.")
	<-ctx.Done()
	fmt.Println("\nstopping the mesh")
	return nil
}

func step(title string) { fmt.Printf("\n== %s\n", title) }

// rotation sends requests through the mesh until both sidecars hold a
// new SVID, and says what changed and how the requests fared.
func rotation(ctx context.Context, first map[string]harness.Cert, frontend, backend *harness.Envoy, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*demoTTL)
	defer cancel()
	var sent, failed atomic.Int64
	var lastFailure atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for loadCtx.Err() == nil {
			status, _, err := harness.Get(loadCtx, url)
			if loadCtx.Err() != nil {
				return
			}
			sent.Add(1)
			if err != nil || status != http.StatusOK {
				failed.Add(1)
				lastFailure.Store(fmt.Sprintf("%d %v", status, err))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	renewed := map[string]harness.Cert{}
	for len(renewed) < 2 {
		for _, s := range []struct {
			envoy *harness.Envoy
			id    string
		}{{frontend, harness.FrontendID}, {backend, harness.BackendID}} {
			if _, ok := renewed[s.id]; ok {
				continue
			}
			c, err := s.envoy.SVID(ctx, s.id)
			if err == nil && c.SerialNumber != first[s.id].SerialNumber {
				renewed[s.id] = c
				fmt.Printf("  %s\n    serial %s -> %s, expires %s\n", s.id, first[s.id].SerialNumber, c.SerialNumber, c.ExpirationTime.UTC().Format(time.RFC3339))
			}
		}
		select {
		case <-ctx.Done():
			stopLoad()
			<-loadDone
			return fmt.Errorf("no SVID renewal within %s: rotation stalled (see meshid's log)", 3*demoTTL)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// A few more requests on the new SVIDs.
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	<-loadDone
	fmt.Printf("  %d requests through the mesh during the rotation, %d failed\n", sent.Load(), failed.Load())
	if failed.Load() > 0 {
		return fmt.Errorf("%d of %d requests failed during the rotation, the last: %v", failed.Load(), sent.Load(), lastFailure.Load())
	}
	return nil
}

// request shows and sends one request with curl when the machine has it
// (that is what a reader would type), or with Go's client otherwise. It
// returns the status, the decision id header and the body.
func request(ctx context.Context, url string) (status int, decisionID, body string, err error) {
	fmt.Printf("$ curl -s -i %s\n", url)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	var out string
	if curl, err := exec.LookPath("curl"); err == nil {
		b, err := exec.CommandContext(ctx, curl, "-s", "-i", url).Output()
		if err != nil {
			return 0, "", "", fmt.Errorf("curl %s: %w", url, err)
		}
		out = strings.ReplaceAll(string(b), "\r\n", "\n")
		fmt.Sscanf(out, "HTTP/%s %d", new(string), &status)
		head, rest, _ := strings.Cut(out, "\n\n")
		body = rest
		for _, line := range strings.Split(head, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "x-meshid-decision-id") {
				decisionID = strings.TrimSpace(v)
			}
		}
	} else {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		status, body, decisionID = resp.StatusCode, string(b), resp.Header.Get("x-meshid-decision-id")
		out = fmt.Sprintf("HTTP/1.1 %s\nx-meshid-decision-id: %s\n\n%s", resp.Status, decisionID, b)
	}
	if status == 0 {
		return 0, "", "", errors.New("no HTTP status in the response:\n" + out)
	}
	fmt.Println(indent(strings.TrimSpace(out)))
	return status, decisionID, body, nil
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\n  ")
}
