package attestor

import (
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
			want: container{ID: cid, Docker: true}},
		{name: "docker, v2 systemd", in: "0::/system.slice/docker-" + cid + ".scope\n", want: container{ID: cid, Docker: true}},
		{name: "docker, v2 with systemd inside the container", in: "0::/system.slice/docker-" + cid + ".scope/init.scope\n", want: container{ID: cid, Docker: true}},
		{name: "docker in a k8s pod, v1", in: "4:memory:/kubepods/burstable/pod" + podID + "/" + cid + "\n",
			want: container{ID: cid, PodUID: podID}},
		{name: "containerd in a k8s pod, v2 systemd", in: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podSys + ".slice/cri-containerd-" + cid + ".scope\n",
			want: container{ID: cid, PodUID: podID}},
		{name: "cri-o, guaranteed pod", in: "0::/kubepods.slice/kubepods-pod" + podSys + ".slice/crio-" + cid + ".scope\n",
			want: container{ID: cid, PodUID: podID}},
		{name: "docker in a pod, systemd driver", in: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podSys + ".slice/docker-" + cid + ".scope\n",
			want: container{ID: cid, Docker: true, PodUID: podID}},
		{name: "a path with colons", in: "0::/a:b/docker/" + cid + "\n", want: container{ID: cid, Docker: true}},
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
