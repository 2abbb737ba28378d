package attestor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	cid    = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	cid2   = "0000000000000000000000000000000000000000000000000000000000000000"
	podID  = "2c48913c-b29f-11e7-9350-020968147796"
	podSys = "2c48913c_b29f_11e7_9350_020968147796"
)

func TestParseCgroup(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    container
		wantErr string
	}{
		{name: "host process, v2", in: "0::/user.slice/user-0.slice/session-1.scope\n"},
		{name: "host process, v1", in: "12:memory:/\n11:pids:/user.slice\n0::/\n"},
		{name: "docker, v1 cgroupfs", in: "12:memory:/docker/" + cid + "\n11:pids:/docker/" + cid + "\n1:name=systemd:/docker/" + cid + "\n",
			want: container{ID: cid, Runtime: "docker"}},
		{name: "docker, v2 systemd", in: "0::/system.slice/docker-" + cid + ".scope\n", want: container{ID: cid, Runtime: "docker"}},
		{name: "docker, v2 with systemd inside the container", in: "0::/system.slice/docker-" + cid + ".scope/init.scope\n", want: container{ID: cid, Runtime: "docker"}},
		{name: "docker in a k8s pod, v1", in: "4:memory:/kubepods/burstable/pod" + podID + "/" + cid + "\n",
			want: container{ID: cid, PodUID: podID}},
		{name: "containerd in a k8s pod, v2 systemd", in: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podSys + ".slice/cri-containerd-" + cid + ".scope\n",
			want: container{ID: cid, Runtime: "cri-containerd", PodUID: podID}},
		{name: "cri-o, guaranteed pod", in: "0::/kubepods.slice/kubepods-pod" + podSys + ".slice/crio-" + cid + ".scope\n",
			want: container{ID: cid, Runtime: "crio", PodUID: podID}},
		{name: "docker in a pod, systemd driver", in: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podSys + ".slice/docker-" + cid + ".scope\n",
			want: container{ID: cid, Runtime: "docker", PodUID: podID}},
		{name: "podman, v1 cgroupfs", in: "4:memory:/libpod_parent/libpod-" + cid + "\n0::/libpod_parent/libpod-" + cid + "\n",
			want: container{ID: cid, Runtime: "podman"}},
		{name: "podman, v2 systemd", in: "0::/machine.slice/libpod-" + cid + ".scope\n", want: container{ID: cid, Runtime: "podman"}},
		{name: "podman's monitor is not in the container", in: "0::/machine.slice/libpod-conmon-" + cid + ".scope\n"},
		{name: "a prefix without .scope is not a runtime's", in: "0::/system.slice/docker-" + cid + "\n"},
		{name: "a path with colons", in: "0::/a:b/docker/" + cid + "\n", want: container{ID: cid, Runtime: "docker"}},
		{name: "an ID-like name that is not one", in: "0::/docker/" + strings.ToUpper(cid) + "\n"},
		{name: "two containers", in: "4:memory:/docker/" + cid + "\n3:pids:/docker/" + cid2 + "\n", wantErr: "line 2: container " + cid2},
		{name: "two pods", in: "4:memory:/kubepods/pod" + podID + "/" + cid + "\n3:pids:/kubepods/pod" + strings.Replace(podID, "2", "3", 1) + "/" + cid + "\n", wantErr: "line 2: pod"},
		{name: "not a cgroup file", in: "hello\n", wantErr: "line 1"},
		{name: "relative path", in: "0::docker/" + cid + "\n", wantErr: "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCgroup([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseCgroup = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestReadContainerRefusesAHugeCgroupFile(t *testing.T) {
	dir := t.TempDir()
	p := fakeProc{pid: 5, start: 1, cgroup: strings.Repeat("0::/"+strings.Repeat("a/", 1000)+"\n", 40)}
	p.write(t, dir)
	proc, err := openProcess(dir, p.caller(), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Close()
	if _, err := proc.container(); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("container() = %v", err)
	}
}

// FuzzParseCgroup: hostile cgroup contents give an error or a result whose
// IDs have the shapes promised, never a panic.
func FuzzParseCgroup(f *testing.F) {
	f.Add("0::/system.slice/docker-" + cid + ".scope\n")
	f.Add("4:memory:/kubepods/burstable/pod" + podID + "/" + cid + "\n")
	f.Add("0::/kubepods.slice/kubepods-besteffort-pod" + podSys + ".slice/cri-containerd-" + cid + ".scope\n")
	f.Add("::\n0::/\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := parseCgroup([]byte(in))
		if err != nil {
			return
		}
		if c.ID != "" && !isContainerID(c.ID) {
			t.Fatalf("container ID %q", c.ID)
		}
		if c.PodUID != "" && !isUUID(c.PodUID) {
			t.Fatalf("pod UID %q", c.PodUID)
		}
	})
}

// TestParseCgroupFiles reads whole /proc/PID/cgroup files of the runtimes
// the docker attestor serves. The cgroupfs files were captured from
// containers run by Podman 4.3 with runc on a cgroup v1 host (hybrid, with
// the unified hierarchy at 0::); "private-cgroupns" is the same container
// read from inside a cgroup namespace of its own. The systemd and Docker
// files follow the layouts those drivers write (systemd and dockerd do not
// run on the machines these were captured on).
func TestParseCgroupFiles(t *testing.T) {
	const (
		captured = "9ffafd71c1c858f8c4612301f1a8e8cfe6db80cf1ec76a1c996664dad04111ba"
		inPod    = "534c572e79f745ffd8b290c39138f4afb7e87da24f3b435b8aad6539652b1ffe"
		written  = "4d6e3f0b7a1c2e9d8f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80910"
	)
	tests := []struct {
		file string
		want container
	}{
		{"podman-cgroupfs-v1", container{ID: captured, Runtime: "podman"}},
		{"podman-cgroupfs-v1-private-cgroupns", container{ID: captured, Runtime: "podman"}},
		{"podman-pod-cgroupfs-v1", container{ID: inPod, Runtime: "podman"}},
		{"podman-conmon-cgroupfs-v1", container{}},
		{"podman-systemd-v1", container{ID: written, Runtime: "podman"}},
		{"podman-systemd-v2", container{ID: written, Runtime: "podman"}},
		{"podman-pod-systemd-v2", container{ID: written, Runtime: "podman"}},
		{"podman-rootless-systemd-v2", container{ID: written, Runtime: "podman"}},
		{"podman-conmon-systemd-v2", container{}},
		{"docker-cgroupfs-v1", container{ID: written, Runtime: "docker"}},
		{"docker-systemd-v2", container{ID: written, Runtime: "docker"}},
		{"docker-systemd-v2-private-cgroupns", container{ID: written, Runtime: "docker"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "cgroup", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseCgroup(data)
			if err != nil || got != tt.want {
				t.Fatalf("parseCgroup = %+v, %v; want %+v", got, err, tt.want)
			}
			if want := tt.want.ID != ""; got.engineAPI() != want {
				t.Errorf("engineAPI() = %v, want %v", got.engineAPI(), want)
			}
		})
	}
}
