package attestor

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
)

// container is what a process's cgroup membership says about the
// container it runs in. The zero value means: not in a container.
type container struct {
	ID string // 64 hex digits
	// Runtime is the engine the cgroup names: "docker", "podman",
	// "cri-containerd", "crio", ...; empty when the path names none (a bare
	// ID under a Kubernetes pod, say).
	Runtime string
	PodUID  string // Kubernetes pod UID, with dashes; empty outside a pod
}

// The runtimes that serve the Docker Engine API, which the docker
// attestor asks.
const (
	runtimeDocker = "docker"
	runtimePodman = "podman"
)

// engineAPI reports whether the container's runtime answers the Docker
// Engine API: Docker itself, or Podman's compatible service.
func (c container) engineAPI() bool {
	return c.ID != "" && (c.Runtime == runtimeDocker || c.Runtime == runtimePodman)
}

// maxCgroupFile bounds what is read of /proc/PID/cgroup: a process can
// put itself into deeply nested cgroups, but not into megabytes of them.
const maxCgroupFile = 64 << 10

// readContainer reads and parses the process's /proc/PID/cgroup.
func (p *Process) container() (container, error) {
	f, err := os.Open(p.path("cgroup"))
	if err != nil {
		return container{}, procErr(p.PID, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCgroupFile+1))
	if err != nil {
		return container{}, procErr(p.PID, err)
	}
	if len(data) > maxCgroupFile {
		return container{}, &Error{Reason: ReasonProcfs, Err: fmt.Errorf("%s: longer than %d bytes", p.path("cgroup"), maxCgroupFile)}
	}
	c, err := parseCgroup(data)
	if err != nil {
		return container{}, &Error{Reason: ReasonProcfs, Err: fmt.Errorf("%s: %w", p.path("cgroup"), err)}
	}
	return c, nil
}

// parseCgroup finds the container ID and pod UID in /proc/PID/cgroup, in
// the layouts of cgroup v1 ("4:memory:/docker/ID") and v2 ("0::/...") with
// the cgroupfs and systemd drivers, e.g.
//
//	/docker/ID
//	/system.slice/docker-ID.scope
//	/libpod_parent/libpod-ID                          (Podman, cgroupfs)
//	/machine.slice/libpod-ID.scope                    (Podman, systemd)
//	/machine.slice/machine-libpod_pod_POD.slice/libpod-ID.scope
//	/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-ID.scope
//	/kubepods/burstable/podUID/ID
//	/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podUID.slice/cri-containerd-ID.scope
//
// Paths read from inside a private cgroup namespace start with "/.." and
// are parsed the same way.
//
// Every hierarchy that names a container must name the same one: a
// process cannot be in two containers, so disagreement is an error rather
// than a guess.
func parseCgroup(data []byte) (container, error) {
	var found container
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxCgroupFile)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/") {
			return container{}, fmt.Errorf("line %d: %q is not hierarchy:controllers:/path", n, truncate(line))
		}
		c := containerInPath(parts[2])
		if c.ID == "" && c.PodUID == "" {
			continue
		}
		if found.ID != "" && c.ID != "" && c.ID != found.ID {
			return container{}, fmt.Errorf("line %d: container %s, but an earlier line says %s", n, c.ID, found.ID)
		}
		if found.PodUID != "" && c.PodUID != "" && c.PodUID != found.PodUID {
			return container{}, fmt.Errorf("line %d: pod %s, but an earlier line says %s", n, c.PodUID, found.PodUID)
		}
		if c.ID != "" {
			found.ID = c.ID
			if c.Runtime != "" {
				// cgroup v1 hierarchies may be named differently by
				// different drivers; any one naming the runtime says it.
				found.Runtime = c.Runtime
			}
		}
		if c.PodUID != "" {
			found.PodUID = c.PodUID
		}
	}
	if err := sc.Err(); err != nil {
		return container{}, err
	}
	return found, nil
}

// containerInPath looks at one cgroup path, segment by segment; the last
// segment naming a container wins (a container's own sub-cgroups, such as
// systemd's init.scope inside it, come after it).
func containerInPath(path string) container {
	var c container
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		if uid, ok := podUID(seg); ok {
			c.PodUID = uid
			continue
		}
		id, runtime, ok := containerID(seg)
		if !ok {
			continue
		}
		if runtime == "" && i > 0 && segs[i-1] == "docker" {
			runtime = runtimeDocker
		}
		c.ID, c.Runtime = id, runtime
	}
	return c
}

// containerID recognises "ID", "docker-ID.scope", "libpod-ID.scope",
// "cri-containerd-ID.scope", "crio-ID.scope" and the like, and Podman's
// cgroupfs "libpod-ID", returning the runtime it names.
func containerID(seg string) (id, runtime string, ok bool) {
	if isContainerID(seg) {
		return seg, "", true
	}
	rest, scope := strings.CutSuffix(seg, ".scope")
	i := strings.LastIndexByte(rest, '-')
	if i < 0 || !isContainerID(rest[i+1:]) {
		return "", "", false
	}
	switch prefix := rest[:i]; {
	case prefix == "libpod-conmon":
		// Podman's container monitor runs on the host beside the
		// container, not in it: its processes are not the container's.
		return "", "", false
	case prefix == "libpod":
		return rest[i+1:], runtimePodman, true
	case scope:
		return rest[i+1:], prefix, true
	}
	return "", "", false
}

func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(b byte) bool { return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' }

// podUID recognises "podUID" (cgroupfs) and "kubepods-QOS-podUID.slice"
// (systemd, with "_" for "-").
func podUID(seg string) (string, bool) {
	s := seg
	if rest, ok := strings.CutSuffix(s, ".slice"); ok {
		i := strings.LastIndex(rest, "-pod")
		if i < 0 {
			return "", false
		}
		s = strings.ReplaceAll(rest[i+1:], "_", "-")
	}
	uid, ok := strings.CutPrefix(s, "pod")
	if !ok || !isUUID(uid) {
		return "", false
	}
	return uid, true
}

// isUUID accepts the 8-4-4-4-12 hex form Kubernetes uses for pod UIDs.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
