package attestor

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// podJSON is one pod of a kubelet /pods answer holding container cid.
func podJSON(uid, containerID string) string {
	return fmt.Sprintf(`{"metadata":{"name":"web-7d4b9","namespace":"prod","uid":%q,"labels":{"app":"web","tier":"front"}},
  "spec":{"serviceAccountName":"web","nodeName":"node-1"},
  "status":{"containerStatuses":[
    {"name":"istio-proxy","image":"envoyproxy/envoy:v1.40","containerID":"containerd://%s"},
    {"name":"app","image":"example/web:3","containerID":%q}]}}`, uid, cid2, containerID)
}

// fakeKubelet serves /pods the way the kubelet does; listedFrom is the
// call (from 1) from which the caller's pod is in the list.
type fakeKubelet struct {
	srv   *httptest.Server
	calls atomic.Int32
}

func startFakeKubelet(t *testing.T, tls bool, token string, listedFrom int32, containerID string) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := k.calls.Add(1)
		if r.URL.Path != "/pods" {
			http.NotFound(w, r)
			return
		}
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		items := []string{podJSON("11111111-2222-3333-4444-555555555555", "containerd://"+cid2)}
		if listedFrom > 0 && n >= listedFrom {
			items = append(items, podJSON(podID, containerID))
		}
		fmt.Fprintf(w, `{"kind":"PodList","items":[%s]}`, strings.Join(items, ","))
	})
	if tls {
		k.srv = httptest.NewTLSServer(h)
	} else {
		k.srv = httptest.NewServer(h)
	}
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKubelet) caFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "kubelet-ca.crt")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.srv.Certificate().Raw}), 0o644)
	return path
}

func TestK8sSelectors(t *testing.T) {
	inPod := "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podSys + ".slice/cri-containerd-" + cid + ".scope\n"
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600)
	tests := []struct {
		name        string
		cgroup      string
		tls         bool
		token       string // what the kubelet wants
		noCA        bool
		serverName  string
		listedFrom  int32
		containerID string
		down        bool
		wantCalls   int32
		wantReason  string
		wantErr     string
	}{
		{name: "listed, token and CA", cgroup: inPod, tls: true, token: "s3cret", listedFrom: 1, wantCalls: 1},
		{name: "read-only port", cgroup: inPod, listedFrom: 1, wantCalls: 1},
		{name: "listed on the third look", cgroup: inPod, tls: true, token: "s3cret", listedFrom: 3, wantCalls: 3},
		{name: "never listed", cgroup: inPod, tls: true, token: "s3cret", wantCalls: 4, wantReason: ReasonKubelet, wantErr: "pod not listed yet"},
		{name: "pod listed, container not yet", cgroup: inPod, tls: true, token: "s3cret", listedFrom: 1, containerID: "containerd://" + cid2,
			wantCalls: 4, wantReason: ReasonKubelet, wantErr: "pod prod/web-7d4b9: container not listed yet"},
		{name: "wrong token: no retry", cgroup: inPod, tls: true, token: "other", listedFrom: 1, wantCalls: 1, wantReason: ReasonKubelet, wantErr: "401"},
		{name: "kubelet's certificate not trusted", cgroup: inPod, tls: true, noCA: true, listedFrom: 1, wantReason: ReasonKubelet, wantErr: "certificate"},
		// httptest's certificate names example.com and 127.0.0.1.
		{name: "certificate verified for the node's name", cgroup: inPod, tls: true, token: "s3cret", serverName: "example.com", listedFrom: 1, wantCalls: 1},
		{name: "certificate for another name", cgroup: inPod, tls: true, token: "s3cret", serverName: "node-1", listedFrom: 1,
			wantReason: ReasonKubelet, wantErr: "not node-1"},
		{name: "kubelet down", cgroup: inPod, down: true, listedFrom: 1, wantReason: ReasonKubelet, wantErr: "kubelet unreachable"},
		{name: "not in a pod", cgroup: "0::/system.slice/docker-" + cid + ".scope\n", tls: true, listedFrom: 1, wantCalls: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := t.TempDir()
			p := fakeProc{pid: 88, start: 5, uid: 1001, gid: 1001, cgroup: tt.cgroup}
			p.write(t, proc)
			if tt.containerID == "" {
				tt.containerID = "containerd://" + cid
			}
			k := startFakeKubelet(t, tt.tls, tt.token, tt.listedFrom, tt.containerID)
			o := K8sOptions{KubeletURL: k.srv.URL, ServerName: tt.serverName, PodRetries: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}}
			if tt.tls {
				o.TokenFile = tokenFile
				if !tt.noCA {
					o.CAFile = k.caFile(t)
				}
			}
			if tt.down {
				k.srv.Close()
			}
			a, err := New(Options{ProcDir: proc, K8s: &o})
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Attest(context.Background(), p.caller())
			if n := k.calls.Load(); tt.wantCalls != 0 && n != tt.wantCalls || tt.wantCalls == 0 && tt.wantReason == "" && n != 0 {
				t.Errorf("%d calls to the kubelet, want %d", n, tt.wantCalls)
			}
			if tt.wantReason != "" {
				if Reason(err) != tt.wantReason || got != nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Attest = %v, %v; want no selectors, reason %s, error with %q", got, err, tt.wantReason, tt.wantErr)
				}
				t.Logf("%v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := selectorStrings(got)
			want := []string{"k8s:ns:prod", "k8s:sa:web", "k8s:pod-name:web-7d4b9", "k8s:pod-uid:" + podID, "k8s:node-name:node-1",
				"k8s:pod-label:app:web", "k8s:pod-label:tier:front", "k8s:container-name:app", "k8s:container-image:example/web:3"}
			if tt.wantCalls == 0 {
				want = nil
				if slices.ContainsFunc(s, func(x string) bool { return strings.HasPrefix(x, "k8s:") }) {
					t.Errorf("k8s selectors for a process outside a pod: %v", s)
				}
			}
			for _, w := range want {
				if !slices.Contains(s, w) {
					t.Errorf("selectors %v lack %s", s, w)
				}
			}
			if slices.Contains(s, "k8s:container-name:istio-proxy") {
				t.Errorf("selectors %v describe the pod's other container", s)
			}
		})
	}
}

func TestK8sOptionsAreChecked(t *testing.T) {
	for _, o := range []K8sOptions{{KubeletURL: "127.0.0.1:10250"}, {KubeletURL: "ftp://x"}, {KubeletURL: "https://x", CAFile: "/nonexistent"}} {
		if _, err := New(Options{K8s: &o}); err == nil {
			t.Errorf("New accepted %+v", o)
		}
	}
	if _, err := New(Options{Docker: &DockerOptions{}}); err == nil {
		t.Error("New accepted docker without a socket")
	}
}
