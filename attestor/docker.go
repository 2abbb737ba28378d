package attestor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// DockerOptions configures docker selectors.
type DockerOptions struct {
	// SocketPath is the Docker Engine API socket, e.g. /var/run/docker.sock.
	SocketPath string
	// Timeout bounds one API call; zero means 2s.
	Timeout time.Duration
	// Retries are the pauses between attempts when the API cannot be
	// reached or fails; nil means 100ms and 400ms (three attempts).
	Retries []time.Duration
}

// dockerPlugin produces docker:label:K:V, docker:env:K=V,
// docker:image_id:REF and docker:image_config_digest:sha256:... for a
// process in a Docker or Podman container, from the Engine API's container
// inspect (Podman serves the same API with `podman system service`).
type dockerPlugin struct {
	client  *http.Client
	retries []time.Duration
}

func newDocker(o DockerOptions) (*dockerPlugin, error) {
	if o.SocketPath == "" {
		return nil, errors.New("docker: socket_path is required")
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Retries == nil {
		o.Retries = []time.Duration{100 * time.Millisecond, 400 * time.Millisecond}
	}
	socket := o.SocketPath
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		// A connection per attestation: nothing idles behind meshid's back.
		DisableKeepAlives: true,
	}
	return &dockerPlugin{client: &http.Client{Transport: tr, Timeout: o.Timeout}, retries: o.Retries}, nil
}

// inspect is the part of GET /containers/{id}/json meshid reads.
type inspect struct {
	ID     string `json:"Id"`
	Image  string `json:"Image"` // the image's config digest, "sha256:..."
	Config *struct {
		Image  string            `json:"Image"` // the reference it was started from
		Labels map[string]string `json:"Labels"`
		Env    []string          `json:"Env"`
	} `json:"Config"`
}

func (d *dockerPlugin) attest(ctx context.Context, p *Process) ([]Selector, error) {
	c, err := p.container()
	if err != nil {
		return nil, err
	}
	if !c.engineAPI() {
		return nil, nil // not a Docker or Podman container: nothing to say
	}
	var in inspect
	err = retry(ctx, d.retries, func() (bool, error) {
		var retryable bool
		in, retryable, err = d.inspect(ctx, c.ID)
		return retryable, err
	})
	if err != nil {
		return nil, &Error{Reason: ReasonDocker, Err: fmt.Errorf("pid %d is in %s container %.12s: %w", p.PID, c.Runtime, c.ID, err)}
	}
	var sels []Selector
	sel := func(v string) { sels = append(sels, Selector{Type: "docker", Value: v}) }
	if in.Config != nil {
		for _, k := range sortedKeys(in.Config.Labels) {
			sel("label:" + k + ":" + in.Config.Labels[k])
		}
		for _, e := range in.Config.Env {
			sel("env:" + e)
		}
		if in.Config.Image != "" {
			sel("image_id:" + in.Config.Image)
		}
	}
	if in.Image != "" {
		sel("image_config_digest:" + in.Image)
	}
	return sels, nil
}

// PingDocker checks that the Engine API answers on o.SocketPath (GET
// /_ping), so that a missing, misplaced or refusing socket stops meshid's
// start with a reason instead of failing every container's attestation
// later. Compose creates a directory where a bind-mounted socket is
// missing on the host; that is named too.
func PingDocker(ctx context.Context, o DockerOptions) error {
	d, err := newDocker(o)
	if err != nil {
		return err
	}
	fi, err := os.Stat(o.SocketPath)
	if err != nil {
		return fmt.Errorf("%w: is the engine running, and its socket mounted there?", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s is not a socket but a %s: mount the engine's API socket there (Docker's /var/run/docker.sock, or Podman's from `podman system service`)", o.SocketPath, fileKind(fi.Mode()))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("Docker Engine API at %s: %w", o.SocketPath, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("Docker Engine API at %s: GET /_ping: %s: %s", o.SocketPath, resp.Status, truncate(string(body)))
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	if m.IsDir() {
		return "directory"
	}
	if m.IsRegular() {
		return "regular file"
	}
	return m.Type().String()
}

// maxDockerResponse bounds a container inspect answer.
const maxDockerResponse = 4 << 20

func (d *dockerPlugin) inspect(ctx context.Context, id string) (in inspect, retryable bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/containers/"+url.PathEscape(id)+"/json", nil)
	if err != nil {
		return in, false, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return in, true, fmt.Errorf("Docker Engine API unreachable: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDockerResponse))
	if err != nil {
		return in, true, fmt.Errorf("Docker Engine API: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return in, false, errors.New("the engine does not know the container")
	case resp.StatusCode != http.StatusOK:
		return in, resp.StatusCode >= 500, fmt.Errorf("Docker Engine API: %s: %s", resp.Status, truncate(string(body)))
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return in, false, fmt.Errorf("Docker Engine API: container inspect: %w", err)
	}
	if in.ID != id {
		return in, false, fmt.Errorf("Docker Engine API answered for container %.12s", in.ID)
	}
	return in, false, nil
}

// retry calls f until it succeeds, fails for good, or the pauses run out.
func retry(ctx context.Context, pauses []time.Duration, f func() (retryable bool, err error)) error {
	for i := 0; ; i++ {
		retryable, err := f()
		if err == nil || !retryable || i == len(pauses) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(pauses[i]):
		}
	}
}
