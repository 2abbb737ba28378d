package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/harness"
)

// fetchAsChild is set in the environment of a copy of this test binary run
// under a uid no entry names: it fetches an X509-SVID and prints the error.
const fetchAsChild = "MESHID_E2E_FETCH_SOCKET"

var (
	serverID = spiffeid.RequireFromString("spiffe://example.org/go/server")
	clientID = spiffeid.RequireFromString("spiffe://example.org/go/client")
)

// TestGoSPIFFEClients runs unmodified go-spiffe v2 clients against the real
// meshid daemon's Workload API: the flows of the SPIFFE seed material.
// This test process (root) is entitled to two identities, a server and a
// client, so it can play both ends of mTLS.
func TestGoSPIFFEClients(t *testing.T) {
	if sock := os.Getenv(fetchAsChild); sock != "" {
		_, err := workloadapi.FetchX509SVID(context.Background(), workloadapi.WithAddr("unix://"+sock))
		fmt.Printf("fetch error: %v\n", err)
		return
	}
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{X509TTL: 10 * time.Second, Entries: []harness.Entry{
		{SPIFFEID: serverID.String(), Selectors: []string{"unix:uid:0"}},
		{SPIFFEID: clientID.String(), Selectors: []string{"unix:uid:0"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	addr := workloadapi.WithClientOptions(workloadapi.WithAddr("unix://" + m.SocketPath))
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "unix://"+m.SocketPath)
	pick := func(id spiffeid.ID) workloadapi.X509SourceOption {
		return workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID == id {
					return s
				}
			}
			return nil
		})
	}
	serverSource, err := workloadapi.NewX509Source(ctx, addr, pick(serverID))
	if err != nil {
		t.Fatal(err)
	}
	defer serverSource.Close()
	// The client source finds the socket through SPIFFE_ENDPOINT_SOCKET.
	clientSource, err := workloadapi.NewX509Source(ctx, pick(clientID))
	if err != nil {
		t.Fatal(err)
	}
	defer clientSource.Close()

	t.Run("X509Source holds the SVID", func(t *testing.T) {
		svid, err := serverSource.GetX509SVID()
		if err != nil || svid.ID != serverID {
			t.Fatalf("GetX509SVID = %v, %v", svid, err)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, serverSource, x509svid.WithTime(time.Now())); err != nil {
			t.Fatalf("the SVID does not verify against the source's own bundle: %v", err)
		}
	})

	t.Run("spiffetls mTLS with AuthorizeID", func(t *testing.T) {
		lis, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(clientID), serverSource))
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		go func() {
			for {
				conn, err := lis.Accept()
				if err != nil {
					return
				}
				io.WriteString(conn, "hello from "+serverID.String()+"\n")
				conn.Close()
			}
		}()
		conn, err := spiffetls.DialWithMode(ctx, "tcp", lis.Addr().String(), spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(serverID), clientSource))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(conn)
		conn.Close()
		if !strings.Contains(string(got), serverID.String()) {
			t.Fatalf("over mTLS got %q", got)
		}
		// The client insists on another identity: the handshake must fail.
		other := spiffeid.RequireFromString("spiffe://example.org/go/someone-else")
		if c, err := spiffetls.DialWithMode(ctx, "tcp", lis.Addr().String(), spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(other), clientSource)); err == nil {
			c.Close()
			t.Fatal("mTLS succeeded although the server is not the ID the client authorized")
		}
	})

	t.Run("gRPC with go-spiffe credentials", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(grpc.Creds(grpccredentials.MTLSServerCredentials(serverSource, serverSource, tlsconfig.AuthorizeID(clientID))))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go srv.Serve(lis)
		defer srv.Stop()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(grpccredentials.MTLSClientCredentials(clientSource, clientSource, tlsconfig.AuthorizeID(serverID))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health over SPIFFE mTLS: %v, %v", resp, err)
		}
	})

	t.Run("JWTSource and ValidateJWTSVID", func(t *testing.T) {
		jwtSource, err := workloadapi.NewJWTSource(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer jwtSource.Close()
		svid, err := jwtSource.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "billing", Subject: clientID})
		if err != nil || svid.ID != clientID {
			t.Fatalf("FetchJWTSVID = %v, %v", svid, err)
		}
		if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), jwtSource, []string{"billing"}); err != nil {
			t.Fatalf("the token does not validate against the JWT bundles meshid serves: %v", err)
		}
		got, err := workloadapi.ValidateJWTSVID(ctx, svid.Marshal(), "billing", workloadapi.WithAddr("unix://"+m.SocketPath))
		if err != nil || got.ID != clientID {
			t.Fatalf("ValidateJWTSVID = %v, %v", got, err)
		}
		if _, err := workloadapi.ValidateJWTSVID(ctx, svid.Marshal(), "payroll", workloadapi.WithAddr("unix://"+m.SocketPath)); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("a token for another audience: %v, want InvalidArgument", err)
		}
	})

	t.Run("a watcher sees rotation", func(t *testing.T) {
		w := &rotationWatcher{seen: map[string]bool{}}
		wctx, stop := context.WithTimeout(ctx, 20*time.Second)
		defer stop()
		go workloadapi.WatchX509Context(wctx, w, workloadapi.WithAddr("unix://"+m.SocketPath))
		// 10s SVIDs renew about every 5s: three serials take ~10s.
		waitFor(t, wctx, "the watcher to see two rotations", func() bool { return w.serials() >= 3 })
		before, _ := serverSource.GetX509SVID()
		waitFor(t, wctx, "the X509Source to follow", func() bool {
			now, _ := serverSource.GetX509SVID()
			return now.Certificates[0].SerialNumber.Cmp(before.Certificates[0].SerialNumber) != 0
		})
	})

	t.Run("the security header is required", func(t *testing.T) {
		conn, err := grpc.NewClient("unix://"+m.SocketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stream, err := workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "workload.spiffe.io") {
			t.Fatalf("without the header: %v, want InvalidArgument naming it", err)
		}
	})

	t.Run("a program no entry matches is refused", func(t *testing.T) {
		self, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(env.Dir, "e2e.test")
		if err := os.WriteFile(bin, self, 0o755); err != nil {
			t.Fatal(err)
		}
		p, err := env.Start(ctx, harness.ProcSpec{Name: "stranger", Path: bin, UID: 4243,
			Args: []string{"-test.run=^TestGoSPIFFEClients$"}, Env: []string{fetchAsChild + "=" + m.SocketPath}})
		if err != nil {
			t.Fatal(err)
		}
		p.Wait()
		if out := p.Logs(); !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "no identity issued") {
			t.Fatalf("the unregistered program saw:\n%s", out)
		}
		if !strings.Contains(m.Logs(), "unix:uid:4243") {
			t.Fatal("meshid did not log the refused caller's selectors")
		}
	})
}

// rotationWatcher counts the distinct SVID serials a go-spiffe watcher saw.
type rotationWatcher struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (w *rotationWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range c.SVIDs {
		w.seen[s.Certificates[0].SerialNumber.String()] = true
	}
}

func (w *rotationWatcher) OnX509ContextWatchError(error) {}

func (w *rotationWatcher) serials() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen) / 2 // two identities, each rotating
}
