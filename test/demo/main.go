// Command demo runs the local demo mesh for `make demo`: meshid, two real
// Envoy sidecars and two tiny apps on loopback, then sends one request the
// policy allows and one it denies. It keeps the mesh up until Ctrl-C, or
// exits after the two requests when DEMO_ONESHOT=1.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
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

func run(ctx context.Context) error {
	env, err := harness.New(ctx, harness.Options{Logf: func(format string, args ...any) {
		fmt.Printf("  · "+format+"\n", args...)
	}})
	if err != nil {
		return err
	}
	defer env.Close()

	fmt.Println("starting the demo mesh: meshid, two Envoy sidecars, two apps")
	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{})
	if err != nil {
		env.Fail() // keep the logs for a look
		return fmt.Errorf("%w (logs in %s/logs)", err, env.Dir)
	}
	fmt.Println()
	fmt.Println(mesh)

	allowed, err := request(ctx, "allowed: the policy lets the frontend GET /hello", mesh.FrontendURL+"hello")
	if err != nil {
		return err
	}
	denied, err := request(ctx, "denied: any other path is refused by meshid's ext_authz", mesh.FrontendURL+"admin")
	if err != nil {
		return err
	}
	if allowed != http.StatusOK || denied != http.StatusForbidden {
		env.Fail()
		return fmt.Errorf("got %d and %d, want 200 and 403 (logs in %s/logs)", allowed, denied, env.Dir)
	}
	fmt.Println("the mesh allowed one request and denied the other, as the policy in policies/envoy/authz.rego says.")

	if os.Getenv("DEMO_ONESHOT") != "" {
		return nil
	}
	fmt.Println("\nthe mesh keeps running for more requests (see \"try:\" above); Ctrl-C stops it.")
	<-ctx.Done()
	fmt.Println("\nstopping the mesh")
	return nil
}

// request shows and sends one request with curl when the machine has it
// (that is what a reader would type), or with Go's client otherwise.
func request(ctx context.Context, what, url string) (int, error) {
	fmt.Printf("%s\n$ curl -s -i %s\n", what, url)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	var status int
	var out string
	if curl, err := exec.LookPath("curl"); err == nil {
		b, err := exec.CommandContext(ctx, curl, "-s", "-i", url).Output()
		if err != nil {
			return 0, fmt.Errorf("curl %s: %w", url, err)
		}
		out = string(b)
		fmt.Sscanf(out, "HTTP/%s %d", new(string), &status)
	} else {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		status, out = resp.StatusCode, fmt.Sprintf("HTTP/1.1 %s\n\n%s", resp.Status, body)
	}
	if status == 0 {
		return 0, errors.New("no HTTP status in the response:\n" + out)
	}
	fmt.Println(indent(strings.TrimSpace(out)))
	fmt.Println()
	return status, nil
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\n  ")
}
