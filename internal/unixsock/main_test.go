package unixsock

import (
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// dialAsChild is set in the environment of a copy of this test binary run
// under another uid: it connects to the socket it names and exits 0 on
// success.
const dialAsChild = "UNIXSOCK_TEST_DIAL"

func TestMain(m *testing.M) {
	if path := os.Getenv(dialAsChild); path != "" {
		conn, err := net.Dial("unix", path)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		conn.Close()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
