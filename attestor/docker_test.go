package attestor

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDocker serves the Docker Engine API's container inspect on a Unix
// socket, as dockerd does: real HTTP over a real socket.
type fakeDocker struct {
	socket string
	calls  atomic.Int32
	// answer returns the status and body for the nth call (from 1).
	answer func(n int32, id string) (int, string)
}

func startFakeDocker(t *testing.T, answer func(n int32, id string) (int, string)) *fakeDocker {
	t.Helper()
	d := &fakeDocker{socket: filepath.Join(t.TempDir(), "docker.sock"), answer: answer}
	lis, err := net.Listen("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, _ *http.Request) {
		status, body := d.answer(d.calls.Add(1), "")
		w.WriteHeader(status)
		w.Write([]byte(body))
	})
	mux.HandleFunc("GET /containers/{id}/json", func(w http.ResponseWriter, r *http.Request) {
		status, body := d.answer(d.calls.Add(1), r.PathValue("id"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return d
}

const inspectJSON = `{"Id":"` + cid + `","Image":"sha256:` + cid2 + `",
  "Config":{"Image":"envoyproxy/envoy:v1.40","Labels":{"app":"web","tier":"front"},"Env":["MODE=prod","PATH=/bin"]}}`

func TestDockerSelectors(t *testing.T) {
	inDocker := "0::/system.slice/docker-" + cid + ".scope\n"
	ok := func(int32, string) (int, string) { return 200, inspectJSON }
	tests := []struct {
		name       string
		cgroup     string
		answer     func(int32, string) (int, string)
		noServer   bool
		want       []string
		wantReason string
		wantCalls  int32
	}{
		{name: "a container", cgroup: inDocker, answer: ok, wantCalls: 1, want: []string{
			"docker:label:app:web", "docker:label:tier:front", "docker:env:MODE=prod", "docker:env:PATH=/bin",
			"docker:image_id:envoyproxy/envoy:v1.40", "docker:image_config_digest:sha256:" + cid2, "unix:uid:1001"}},
		{name: "a Podman container, through Podman's Engine API", cgroup: "0::/libpod_parent/libpod-" + cid + "\n", answer: ok, wantCalls: 1,
			want: []string{"docker:label:app:web", "docker:image_config_digest:sha256:" + cid2}},
		{name: "Podman's monitor process is on the host", cgroup: "0::/machine.slice/libpod-conmon-" + cid + ".scope\n", answer: ok, wantCalls: 0,
			want: []string{"unix:uid:1001"}},
		{name: "not in a container", cgroup: "0::/user.slice\n", answer: ok, wantCalls: 0, want: []string{"unix:uid:1001"}},
		{name: "a containerd container is not Docker's", cgroup: "0::/kubepods.slice/kubepods-pod" + podSys + ".slice/cri-containerd-" + cid + ".scope\n",
			answer: ok, wantCalls: 0, want: []string{"unix:uid:1001"}},
		{name: "dockerd hiccups, then answers", cgroup: inDocker, wantCalls: 3, want: []string{"docker:label:app:web"},
			answer: func(n int32, _ string) (int, string) {
				if n < 3 {
					return 500, `{"message":"busy"}`
				}
				return 200, inspectJSON
			}},
		{name: "dockerd keeps failing", cgroup: inDocker, wantCalls: 3, wantReason: ReasonDocker,
			answer: func(int32, string) (int, string) { return 500, `{"message":"busy"}` }},
		{name: "unknown container: no retry", cgroup: inDocker, wantCalls: 1, wantReason: ReasonDocker,
			answer: func(int32, string) (int, string) { return 404, `{"message":"No such container"}` }},
		{name: "garbage", cgroup: inDocker, wantCalls: 1, wantReason: ReasonDocker,
			answer: func(int32, string) (int, string) { return 200, `{"Id": [` }},
		{name: "an answer about another container", cgroup: inDocker, wantCalls: 1, wantReason: ReasonDocker,
			answer: func(int32, string) (int, string) { return 200, `{"Id":"` + cid2 + `"}` }},
		{name: "dockerd not running", cgroup: inDocker, noServer: true, wantReason: ReasonDocker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := t.TempDir()
			p := fakeProc{pid: 77, start: 5, uid: 1001, gid: 1001, cgroup: tt.cgroup}
			p.write(t, proc)
			d := startFakeDocker(t, tt.answer)
			if tt.noServer {
				os.Remove(d.socket)
			}
			a, err := New(Options{ProcDir: proc, Docker: &DockerOptions{SocketPath: d.socket, Retries: []time.Duration{time.Millisecond, time.Millisecond}}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Attest(context.Background(), p.caller())
			if n := d.calls.Load(); n != tt.wantCalls {
				t.Errorf("%d calls to the Docker API, want %d", n, tt.wantCalls)
			}
			if tt.wantReason != "" {
				if Reason(err) != tt.wantReason || got != nil {
					t.Fatalf("Attest = %v, %v; want no selectors and reason %s", got, err, tt.wantReason)
				}
				if !strings.Contains(err.Error(), "pid 77") || !strings.Contains(err.Error(), cid[:12]) {
					t.Errorf("error %q does not name the pid and the container", err)
				}
				t.Logf("%v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := selectorStrings(got)
			for _, w := range tt.want {
				if !slices.Contains(s, w) {
					t.Errorf("selectors %v lack %s", s, w)
				}
			}
			if tt.wantCalls == 0 && slices.ContainsFunc(s, func(x string) bool { return strings.HasPrefix(x, "docker:") }) {
				t.Errorf("docker selectors for a process outside Docker: %v", s)
			}
		})
	}
}

// TestPingDocker: meshid's start checks the engine's socket and names what
// is wrong with it.
func TestPingDocker(t *testing.T) {
	ok := startFakeDocker(t, func(int32, string) (int, string) { return 200, "OK" })
	busy := startFakeDocker(t, func(int32, string) (int, string) { return 500, `{"message":"busy"}` })
	gone := startFakeDocker(t, nil)
	os.Remove(gone.socket)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	tests := []struct {
		socket, wantErr string
	}{
		{ok.socket, ""},
		{busy.socket, "GET /_ping: 500"},
		{gone.socket, "no such file or directory: is the engine running"},
		{dir, "is not a socket but a directory"},
		{file, "is not a socket but a regular file"},
	}
	for _, tt := range tests {
		err := PingDocker(context.Background(), DockerOptions{SocketPath: tt.socket, Timeout: time.Second})
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("PingDocker(%s) = %v", tt.socket, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.socket) {
			t.Errorf("PingDocker(%s) = %v, want an error naming the socket and %q", tt.socket, err, tt.wantErr)
		}
	}
}
