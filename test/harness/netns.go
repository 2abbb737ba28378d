package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Host is a test "machine": a Linux network namespace of its own, joined by
// a veth pair to a bridge that Env.Hosts made. Processes started on a host
// (Host.StartMeshid, Host.StartEnvoy, Host.StartApp, or ProcSpec.Host) see
// only its loopback and its bridge address, so two hosts talk across the
// bridge or not at all. The harness itself stays in its own namespace and
// reaches every host at Host.IP through the bridge.
type Host struct {
	Name  string // as given to Env.Hosts: "host1"
	NetNS string // the `ip netns` name
	IP    string // the host's address on the bridge
	// HarnessIP is the harness's own address on the bridge, the same for
	// every host of one Env.Hosts call: what a process on the host reaches
	// something the harness runs at, such as a PKI engine.
	HarnessIP string

	env *Env
}

// hostSubnets hands each Env.Hosts call in this process its own /24, and
// the process id spreads test binaries that run side by side.
var hostSubnets struct {
	sync.Mutex
	next int
}

// Hosts creates one network namespace per name, each with loopback up and
// an address on a new bridge, and checks that the harness reaches each of
// them. Env.Close deletes the namespaces and the bridge. It needs root.
func (e *Env) Hosts(ctx context.Context, names ...string) ([]*Host, error) {
	if len(names) == 0 || len(names) > 200 {
		return nil, fmt.Errorf("harness: Hosts needs 1 to 200 names, got %d", len(names))
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("harness: hosts need iproute2's ip: %w", err)
	}
	hostSubnets.Lock()
	slot := (os.Getpid() + hostSubnets.next) % 250
	hostSubnets.next++
	hostSubnets.Unlock()

	bridge := fmt.Sprintf("mib%d", slot)
	prefix := fmt.Sprintf("10.213.%d.", slot)
	var created []func() error // undo, newest last
	undo := func() error {
		var errs []error
		for i := len(created) - 1; i >= 0; i-- {
			errs = append(errs, created[i]())
		}
		created = nil
		return errors.Join(errs...)
	}
	fail := func(err error) ([]*Host, error) {
		return nil, errors.Join(err, undo())
	}

	if err := runIP(ctx, "link", "add", bridge, "type", "bridge"); err != nil {
		return fail(err)
	}
	created = append(created, func() error { return runIP(context.Background(), "link", "del", bridge) })
	if err := runIP(ctx, "addr", "add", prefix+"1/24", "dev", bridge); err != nil {
		return fail(err)
	}
	if err := runIP(ctx, "link", "set", bridge, "up"); err != nil {
		return fail(err)
	}

	hosts := make([]*Host, 0, len(names))
	for i, name := range names {
		h := &Host{
			Name:      name,
			NetNS:     fmt.Sprintf("meshid-%d-%s", slot, name),
			IP:        prefix + strconv.Itoa(i+2),
			HarnessIP: prefix + "1",
			env:       e,
		}
		veth := fmt.Sprintf("mi%dh%d", slot, i) // at most 15 bytes
		steps := [][]string{
			{"netns", "add", h.NetNS},
			{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.NetNS},
			{"link", "set", veth, "master", bridge, "up"},
			{"-n", h.NetNS, "addr", "add", h.IP + "/24", "dev", "eth0"},
			{"-n", h.NetNS, "link", "set", "eth0", "up"},
			{"-n", h.NetNS, "link", "set", "lo", "up"},
		}
		for j, step := range steps {
			if err := runIP(ctx, step...); err != nil {
				return fail(fmt.Errorf("harness: host %s: %w", name, err))
			}
			if j == 0 {
				ns := h.NetNS
				created = append(created, func() error { return runIP(context.Background(), "netns", "del", ns) })
			}
		}
		hosts = append(hosts, h)
	}
	e.mu.Lock()
	e.atClose = append(e.atClose, undo)
	e.mu.Unlock()
	for _, h := range hosts {
		if err := h.checkReachable(ctx); err != nil {
			return nil, err
		}
		e.logf("harness: host %s is network namespace %s at %s (bridge %s)", h.Name, h.NetNS, h.IP, bridge)
	}
	return hosts, nil
}

// FreeAddr returns "IP:PORT" on the host's bridge address, for a port no
// Env in this process has handed out before. A fresh namespace has every
// port free, so only the harness's own bookkeeping matters.
func (h *Host) FreeAddr() string {
	_, port, _ := net.SplitHostPort(h.env.FreeAddr())
	return net.JoinHostPort(h.IP, port)
}

// checkReachable listens on the host and connects to it from the harness,
// so a bridge that drops traffic (a firewall's FORWARD rules, say) is
// reported here, not as a mysterious timeout in a test.
func (h *Host) checkReachable(ctx context.Context) error {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(h.IP, "0"))
		return err
	})
	if err != nil {
		return fmt.Errorf("harness: host %s: listen on %s: %w", h.Name, h.IP, err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return fmt.Errorf("harness: host %s: the harness cannot reach %s across the bridge: %w", h.Name, ln.Addr(), err)
	}
	return c.Close()
}

// Do runs fn on an OS thread that is in the host's network namespace:
// sockets fn opens, and processes it starts, belong to the host. Use it for
// a client that must originate on the host.
func (h *Host) Do(fn func() error) error {
	ns, err := os.Open("/run/netns/" + h.NetNS)
	if err != nil {
		return fmt.Errorf("harness: host %s: %w", h.Name, err)
	}
	defer ns.Close()
	return inNetNS(int(ns.Fd()), fn)
}

// inNetNS runs fn with the calling goroutine locked to a thread moved into
// the network namespace nsFD, and moves the thread back afterwards. If it
// cannot move back, the thread stays locked, so no other goroutine ever
// runs in the wrong namespace; Go retires it when the goroutine exits.
func inNetNS(nsFD int, fn func() error) error {
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("harness: own network namespace: %w", err)
	}
	defer self.Close()
	if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("harness: enter network namespace: %w", err)
	}
	fnErr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		return errors.Join(fnErr, fmt.Errorf("harness: leave network namespace: %w (thread retired)", err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// StartMeshid runs meshid on the host: Env.StartMeshid with its listeners
// on the host's address.
func (h *Host) StartMeshid(ctx context.Context, o MeshidOptions) (*Meshid, error) {
	o.host = h
	return h.env.StartMeshid(ctx, o)
}

func runIP(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
