package node

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/ca"
)

// TestStatusOnTheAdminSocket runs a node, holds a Workload API stream open
// as a go-spiffe X509Source does, and reads /status on the admin socket:
// the stream with this process's pid, uid and SPIFFE ID, the SVID it was
// sent (by serial), the CA timeline and the policy revision.
func TestStatusOnTheAdminSocket(t *testing.T) {
	cfg := nodeConfig(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := runNode(t, cfg)
	fetchCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(fetchCtx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+cfg.SocketPath)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}

	admin := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", cfg.AdminSocketPath())
	}}}
	code, body := httpGet(t, admin, "http://meshid/status")
	if code != http.StatusOK {
		t.Fatalf("/status = %d %s", code, body)
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.WorkloadStreams) != 1 {
		t.Fatalf("workload streams %+v, want the X509Source's", st.WorkloadStreams)
	}
	ws := st.WorkloadStreams[0]
	if ws.PID != int32(os.Getpid()) || ws.UID != uint32(os.Geteuid()) || ws.Method != "FetchX509SVID" || ws.Responses != 1 ||
		len(ws.SPIFFEIDs) != 1 || ws.SPIFFEIDs[0] != "spiffe://example.org/node-test" || len(ws.Selectors) == 0 {
		t.Errorf("workload stream %+v, want this process's FetchX509SVID with its identity", ws)
	}
	if len(st.SVIDs) != 1 || st.SVIDs[0].Serial != svid.Certificates[0].SerialNumber.Text(16) || !st.SVIDs[0].NotAfter.Equal(svid.Certificates[0].NotAfter) {
		t.Errorf("svids %+v, want the one this process holds (serial %x)", st.SVIDs, svid.Certificates[0].SerialNumber)
	}
	if gens := st.CA.Generations; st.CA.Source != "self-signed" || len(gens) != 1 || gens[0].State != ca.StateActive {
		t.Errorf("ca %+v, want one active self-signed generation", st.CA)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(st.Policy.Revision) || st.Policy.Files != 2 {
		t.Errorf("policy %+v, want a revision of the 2 files", st.Policy)
	}
	if st.TrustDomain != "example.org" || st.Build.GoVersion == "" || st.Started.After(st.Time) || len(st.SDSStreams) != 0 {
		t.Errorf("status %+v", st)
	}

	// The names scripts rely on (docs/cli.md) are the JSON's.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "build", "trust_domain", "started", "sds_streams", "workload_streams", "svids", "ca", "federated_bundles", "policy"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("/status has no %q", k)
		}
	}

	// Closed, the stream goes from the list.
	src.Close()
	for {
		_, body := httpGet(t, admin, "http://meshid/status")
		var st Status
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		if len(st.WorkloadStreams) == 0 {
			break
		}
		select {
		case <-fetchCtx.Done():
			t.Fatal("a closed Workload API stream is still listed")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
