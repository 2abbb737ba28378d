package harness

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

func TestHostsAreSeparateMachines(t *testing.T) {
	e := ForTest(t)
	hosts, err := e.Hosts(t.Context(), "host1", "host2")
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := hosts[0], hosts[1]
	app, err := h1.StartApp(t.Context(), "backend", BackendAppUID, "")
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(app.Addr); host != h1.IP {
		t.Fatalf("app on host1 listens on %s, want host1's address %s", app.Addr, h1.IP)
	}
	if uid, _ := procIDs(t, app.Pid()); uid != BackendAppUID {
		t.Errorf("app on host1 runs as uid %d, want %d", uid, BackendAppUID)
	}
	if ns, self := netnsOf(t, app.Pid()), netnsOf(t, os.Getpid()); ns == self {
		t.Errorf("app on host1 shares the harness's network namespace %s", ns)
	}

	// The harness reaches host1 over the bridge, and so does host2.
	if status, _, err := Get(t.Context(), app.URL+"/x"); err != nil || status != 200 {
		t.Fatalf("harness → host1 app: %d %v", status, err)
	}
	if err := h2.Do(func() error { return dial(app.Addr) }); err != nil {
		t.Errorf("host2 → host1 app at %s: %v", app.Addr, err)
	}
	// Loopback is each host's own: host2's 127.0.0.1 is not host1's.
	ln, err := listenOn(h1, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := h2.Do(func() error { return dial(ln.Addr().String()) }); err == nil {
		t.Errorf("host2 reached host1's loopback listener %s", ln.Addr())
	}
	if err := h1.Do(func() error { return dial(ln.Addr().String()) }); err != nil {
		t.Errorf("host1 → its own loopback %s: %v", ln.Addr(), err)
	}

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if _, err := os.Stat("/run/netns/" + h.NetNS); !os.IsNotExist(err) {
			t.Errorf("namespace %s outlived Env.Close: %v", h.NetNS, err)
		}
	}
}

func listenOn(h *Host, addr string) (ln net.Listener, err error) {
	err = h.Do(func() error {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func netnsOf(t *testing.T, pid int) string {
	t.Helper()
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	return link
}
