package attestor

import (
	"fmt"
	"io"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if sock := os.Getenv("MESHID_TEST_HOLD"); sock != "" {
		holdConnection(sock)
		return
	}
	goleak.VerifyTestMain(m)
}

// holdConnection is the child side of the peer tests: connect, say so,
// and keep the connection until the parent closes it or kills us.
func holdConnection(sock string) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Println("connected")
	io.Copy(io.Discard, conn)
	os.Exit(0)
}
