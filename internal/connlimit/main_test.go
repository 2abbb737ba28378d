package connlimit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// A copy of this test binary run under another uid with childMode set in its
// environment plays a local user connecting to the socket (see runChild).
const (
	childMode = "CONNLIMIT_TEST_CHILD" // "hold": open childN connections, keep them until stdin closes
	childSock = "CONNLIMIT_TEST_SOCK"
	childN    = "CONNLIMIT_TEST_N"
	// childFlood set to "1" makes a holding child also connect again and
	// again, as fast as it is refused, until stdin closes.
	childFlood = "CONNLIMIT_TEST_FLOOD"
)

func TestMain(m *testing.M) {
	if os.Getenv(childMode) == "hold" {
		if err := hold(os.Getenv(childSock), os.Getenv(childN), os.Getenv(childFlood) == "1"); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// hold opens n connections one after the other and prints how many the
// server took (it sent something: gRPC's settings) and how many it closed
// at once; it keeps those it took, and floods if asked, until stdin ends.
func hold(sock, nStr string, flood bool) error {
	n, err := strconv.Atoi(nStr)
	if err != nil {
		return err
	}
	var kept []net.Conn
	refused := 0
	for range n {
		c, took, err := dial(sock)
		if err != nil {
			return err
		}
		if took {
			kept = append(kept, c)
		} else {
			refused++
		}
	}
	fmt.Printf("accepted=%d refused=%d\n", len(kept), refused)

	var stop atomic.Bool
	var floods atomic.Int64
	var wg sync.WaitGroup
	if flood {
		for range 2 {
			wg.Go(func() {
				for !stop.Load() {
					if c, took, err := dial(sock); err == nil && !took {
						floods.Add(1)
					} else if err == nil {
						c.Close()
					}
				}
			})
		}
	}
	io.Copy(io.Discard, os.Stdin)
	stop.Store(true)
	wg.Wait()
	fmt.Printf("flood_refused=%d\n", floods.Load())
	for _, c := range kept {
		c.Close()
	}
	return nil
}

// dial connects and tells whether the server took the connection (it
// wrote to it) or closed it unread; a refused one comes back closed.
func dial(sock string) (net.Conn, bool, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, false, err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	c.SetReadDeadline(time.Time{})
	switch {
	case err == nil:
		return c, true, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.Close()
		return nil, false, errors.New("the server neither took nor refused a connection in 5s")
	default: // EOF, or a reset
		c.Close()
		return nil, false, nil
	}
}

// child is a running copy of this test binary under another uid.
type child struct {
	stdin io.WriteCloser
	out   *bufio.Reader
	wait  func() error
}

// readLine returns the child's next report line.
func (c *child) readLine(t *testing.T) string {
	t.Helper()
	line, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v (said %q)", err, line)
	}
	return line[:len(line)-1]
}

// stop ends the child's hold and returns its last report line.
func (c *child) stop(t *testing.T) string {
	t.Helper()
	c.stdin.Close()
	line := c.readLine(t)
	if err := c.wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	return line
}
