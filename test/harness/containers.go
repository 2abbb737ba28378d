package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Containers: a Podman Engine API service (`podman system service`, the
// Docker-compatible API meshid's docker attestor reads) and compose
// projects run by podman-compose, for tests of the compose mesh. Podman and
// podman-compose run with the project-local configuration mk/containers.mk
// writes (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF), never the machine's.

// The environment `make test` passes (mk/containers.mk).
const (
	envPodmanCompose = "MESHID_PODMAN_COMPOSE"
	envContainers    = "CONTAINERS_CONF"
	envStorage       = "CONTAINERS_STORAGE_CONF"
)

// Podman is a running Podman API service and the CLI configuration it
// shares with podman and podman-compose.
type Podman struct {
	// Socket is the Engine API's Unix socket, inside Env.Dir.
	Socket string

	e       *Env
	podman  string
	compose string
	client  *http.Client
}

// StartPodman starts `podman system service` on a socket in Env.Dir and
// waits until it answers /_ping. The service stops with the Env.
func (e *Env) StartPodman(ctx context.Context) (*Podman, error) {
	var missing []string
	for _, v := range []string{envPodmanCompose, envContainers, envStorage} {
		if os.Getenv(v) == "" {
			missing = append(missing, "$"+v)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("harness: %s not set: run through `make test` (mk/containers.mk installs Podman and writes its configuration)", strings.Join(missing, ", "))
	}
	podman, err := exec.LookPath("podman")
	if err != nil {
		return nil, fmt.Errorf("harness: %w (mk/containers.mk installs it)", err)
	}
	dir, err := e.MkdirAll("podman")
	if err != nil {
		return nil, err
	}
	p := &Podman{Socket: filepath.Join(dir, "podman.sock"), e: e, podman: podman, compose: os.Getenv(envPodmanCompose)}
	p.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.Socket)
		},
	}}
	proc, err := e.Start(ctx, ProcSpec{Name: "podman-service", Path: podman,
		Args: []string{"system", "service", "--time=0", "unix://" + p.Socket}})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, e.readyTimeout)
	defer cancel()
	for {
		status, _, err := p.Engine(ctx, http.MethodGet, "/_ping")
		if err == nil && status == http.StatusOK {
			e.logf("harness: podman API service ready on %s", p.Socket)
			return p, nil
		}
		last := fmt.Sprintf("status %d", status)
		if err != nil {
			last = err.Error()
		}
		select {
		case <-proc.Done():
			return nil, proc.failure(errors.New("podman system service exited"))
		case <-ctx.Done():
			return nil, proc.failure(fmt.Errorf("podman API not ready: %w (last attempt: %s)", ctx.Err(), last))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Engine sends one request to the Engine API, as the docker CLI does, and
// returns the status and body.
func (p *Podman) Engine(ctx context.Context, method, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://podman"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// Podman runs the podman CLI with the project's configuration and returns
// what it printed. It runs the short commands directly rather than as an
// Env process, so that teardown can use it after Env.Close began.
func (p *Podman) Podman(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "", nil, p.podman, args...)
}

func run(ctx context.Context, dir string, env []string, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", filepath.Base(path), strings.Join(args, " "), err, indent(string(out)))
	}
	return string(out), nil
}

// ComposeSpec says which compose file to run as which project.
type ComposeSpec struct {
	File string
	// Project is the compose project name: container, network and volume
	// names start with it, so concurrent runs do not meet.
	Project string
	// Env holds the variables the compose file interpolates.
	Env []string
}

// Compose is a compose project brought up by ComposeUp.
type Compose struct {
	ComposeSpec
	p *Podman
}

// ComposeUp runs `podman-compose up -d` (images must exist: nothing is
// built or pulled) and makes sure Env.Close tears the project down:
// containers, networks and named volumes, the engine's logs of every
// container kept in Env.Dir/logs first when the test failed. It tears down
// what was created even when up fails.
func (p *Podman) ComposeUp(ctx context.Context, spec ComposeSpec) (*Compose, error) {
	c := &Compose{ComposeSpec: spec, p: p}
	p.e.mu.Lock()
	p.e.atClose = append(p.e.atClose, c.down)
	p.e.mu.Unlock()
	if _, err := c.Run(ctx, "up", "-d", "--no-build"); err != nil {
		return c, err
	}
	return c, nil
}

// Run runs podman-compose with the project's file, name and environment.
func (c *Compose) Run(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"-f", c.File, "-p", c.Project}, args...)
	return run(ctx, filepath.Dir(c.File), c.Env, c.p.compose, args...)
}

// Container is the name podman-compose gives a service's container.
func (c *Compose) Container(service string) string { return c.Project + "_" + service + "_1" }

// Volume is the engine's name of one of the project's named volumes.
func (c *Compose) Volume(name string) string { return c.Project + "_" + name }

// Label marks a container the test starts beside the project (podman
// run --label) so that teardown removes it with the project's own.
func (c *Compose) Label() string { return "com.docker.compose.project=" + c.Project }

// down keeps the containers' logs if the test failed, then removes
// everything the project made: `down -v`, and whatever survived it by label.
func (c *Compose) down() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	filter := "label=" + c.Label()
	c.p.e.mu.Lock()
	failed := c.p.e.failed
	c.p.e.mu.Unlock()
	if failed {
		c.keepLogs(ctx, filter)
	}
	// down reads the compose file, which may be the broken one a test
	// fed to up: then only the sweep by label below removes anything, and
	// it is the sweep's failures that count.
	if _, err := c.Run(ctx, "down", "-v", "-t", "2"); err != nil {
		c.p.e.logf("harness: %v", err)
	}
	var errs []error
	for _, kind := range []string{"container", "volume", "network"} {
		ls := []string{kind, "ls", "-q", "--filter", filter}
		if kind == "container" {
			ls = append(ls, "-a")
		}
		out, err := c.p.Podman(ctx, ls...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if left := strings.Fields(out); len(left) > 0 {
			if _, err := c.p.Podman(ctx, append([]string{kind, "rm", "-f"}, left...)...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Compose) keepLogs(ctx context.Context, filter string) {
	out, err := c.p.Podman(ctx, "ps", "-a", "--filter", filter, "--format", "{{.Names}} {{.Status}}")
	c.p.e.logf("harness: compose project %s at teardown:\n%s%v", c.Project, indent(out), err)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		if name == "" {
			continue
		}
		logs, err := c.p.Podman(ctx, "logs", name)
		if err != nil {
			logs += err.Error()
		}
		path := filepath.Join(c.p.e.Dir, "logs", "container-"+name+".log")
		if err := os.WriteFile(path, []byte(logs), 0o644); err != nil {
			c.p.e.logf("harness: %v", err)
			continue
		}
		tail := (&Process{LogPath: path}).LogTail(20)
		c.p.e.logf("harness: container %s, last lines of %s:\n%s", name, path, indent(tail))
	}
}
