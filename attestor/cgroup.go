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
	ID     string // 64 hex digits
	Docker bool   // the cgroup names Docker as the runtime
	PodUID string // Kubernetes pod UID, with dashes; empty outside a pod
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
//	/kubepods/burstable/podUID/ID
//	/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podUID.slice/cri-containerd-ID.scope
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
			found.ID, found.Docker = c.ID, found.Docker || c.Docker
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
		c.ID = id
		c.Docker = runtime == "docker" || (runtime == "" && i > 0 && segs[i-1] == "docker")
	}
	return c
}

// containerID recognises "ID", "docker-ID.scope", "cri-containerd-ID.scope",
// "crio-ID.scope" and the like, returning the runtime prefix it saw.
func containerID(seg string) (id, runtime string, ok bool) {
	if isContainerID(seg) {
		return seg, "", true
	}
	rest, ok := strings.CutSuffix(seg, ".scope")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '-')
	if i < 0 || !isContainerID(rest[i+1:]) {
		return "", "", false
	}
	return rest[i+1:], rest[:i], true
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
