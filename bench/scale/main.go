// Command scale gives the figures of docs/scaling.md.
//
// Without flags it measures one real node at size: it starts the meshid
// binary with ENTRIES registration entries, then CALLERS client processes,
// each under a uid of its own, that hold STREAMS/CALLERS SDS streams on
// meshid's socket, every stream asking for another identity of its uid, and
// reports meshid's resident memory and heap once every stream has its SVID.
//
// With -simulate it runs the schedule of a whole mesh instead: N nodes of W
// workloads each, for a simulated day, with meshid's renewal rules
// (intermediates at 45-55 % of their life, SVIDs at half theirs, the
// upstream's roots read every roots_refresh), and prints the calls the PKI
// engine receives and the work each node does, per second.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	firstUID   = 30000
)

func main() {
	entries := flag.Int("entries", 1000, "registration entries (and identities served)")
	streams := flag.Int("streams", 1000, "SDS streams, each on its own connection")
	callers := flag.Int("callers", 50, "client processes, each under a uid of its own")
	meshid := flag.String("meshid", "bin/meshid", "the meshid binary")
	simulate := flag.Bool("simulate", false, "simulate a mesh's schedule instead of measuring a node")
	nodes := flag.Int("nodes", 1000, "-simulate: nodes")
	workloads := flag.Int("workloads", 100, "-simulate: workloads per node")
	caTTL := flag.Duration("ca-ttl", 24*time.Hour, "-simulate: intermediate lifetime (ca.ttl, or the engine's max TTL)")
	svidTTL := flag.Duration("svid-ttl", time.Hour, "-simulate: X509-SVID lifetime (svid.x509_ttl)")
	rootsRefresh := flag.Duration("roots-refresh", 5*time.Minute, "-simulate: ca.upstream.vault.roots_refresh")
	issuers := flag.Int("issuers", 1, "-simulate: issuers on the PKI mount (each read on a roots refresh)")
	child := flag.String("child", "", "internal: run as a client holding streams for these comma-separated IDs")
	sock := flag.String("socket", "", "internal: meshid's socket, for -child")
	flag.Parse()

	var err error
	switch {
	case *child != "":
		err = runChild(*sock, strings.Split(*child, ","))
	case *simulate:
		simulateMesh(*nodes, *workloads, *caTTL, *svidTTL, *rootsRefresh, *issuers)
	default:
		err = measure(*meshid, *entries, *streams, *callers)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// measure runs meshid with entries entries and streams streams from
// callers processes, and prints its memory.
func measure(bin string, entries, streams, callers int) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the clients run under uids of their own")
	}
	if streams%callers != 0 || entries < streams {
		return fmt.Errorf("want streams a multiple of callers and entries >= streams (%d, %d, %d)", entries, streams, callers)
	}
	dir, err := os.MkdirTemp("", "meshid-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	// Entry i belongs to uid firstUID + i % callers: each caller has
	// entries/callers identities, and asks for streams/callers of them.
	var b strings.Builder
	b.WriteString("entries:\n")
	ids := make([][]string, callers)
	for i := range entries {
		c := i % callers
		id := fmt.Sprintf("spiffe://example.org/scale/u%d/w%d", firstUID+c, i)
		ids[c] = append(ids[c], id)
		fmt.Fprintf(&b, "  - spiffe_id: %s\n    selectors: [\"unix:uid:%d\"]\n", id, firstUID+c)
	}
	sock := filepath.Join(dir, "sock", "agent.sock")
	admin := "127.0.0.1:18089"
	config := fmt.Sprintf("trust_domain: example.org\ndata_dir: %s\nsocket_path: %s\nentries_file: %s\nadmin: {address: %s}\nauthz: {address: 127.0.0.1:18090, policy_dir: %s}\nlimits: {connections: %d, connections_per_uid: %d}\nlog: {level: warn}\n",
		filepath.Join(dir, "data"), sock, filepath.Join(dir, "entries.yaml"), admin, filepath.Join(dir, "policies"), 4*streams, 2*streams/callers+8)
	files := map[string]string{"entries.yaml": b.String(), "meshid.yaml": config,
		"policies/authz.rego": "package envoy.authz\n\ndefault allow := false\n"}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	daemon := exec.Command(bin, "run", "-config", filepath.Join(dir, "meshid.yaml"))
	daemon.Stdout, daemon.Stderr = os.Stderr, os.Stderr
	if err := daemon.Start(); err != nil {
		return err
	}
	defer func() {
		_ = daemon.Process.Signal(syscall.SIGTERM)
		_ = daemon.Wait()
	}()
	if err := waitHTTP("http://"+admin+"/readyz", 30*time.Second); err != nil {
		return err
	}
	idle := rss(daemon.Process.Pid)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	perCaller := streams / callers
	began := time.Now()
	var kids []*exec.Cmd
	var readies []*bufio.Reader
	defer func() {
		for _, k := range kids {
			_ = k.Process.Kill()
			_ = k.Wait()
		}
	}()
	for c := range callers {
		k := exec.Command(self, "-child", strings.Join(ids[c][:perCaller], ","), "-socket", sock)
		k.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(firstUID + c), Gid: uint32(firstUID + c)}, Pdeathsig: syscall.SIGKILL}
		k.Stderr = os.Stderr
		out, err := k.StdoutPipe()
		if err != nil {
			return err
		}
		if err := k.Start(); err != nil {
			return err
		}
		kids = append(kids, k)
		readies = append(readies, bufio.NewReader(out))
	}
	for c, r := range readies {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("caller %d: %w", c, err)
		}
		if strings.TrimSpace(line) != "ready" {
			return fmt.Errorf("caller %d said %q, want ready", c, line)
		}
	}
	allServed := time.Since(began)
	time.Sleep(2 * time.Second) // let the runtime settle after the burst
	loaded := rss(daemon.Process.Pid)
	heap, goroutines := scrape("http://" + admin + "/metrics")
	fmt.Printf("meshid with %d entries, %d SDS streams (each its own connection) from %d client processes, %d identities served\n",
		entries, streams, callers, streams)
	fmt.Printf("  every stream had its SVID and bundle %s after the first client started\n", allServed.Round(time.Millisecond))
	fmt.Printf("  resident memory: %.1f MiB idle (entries loaded), %.1f MiB with every stream open\n", float64(idle)/(1<<20), float64(loaded)/(1<<20))
	fmt.Printf("  Go heap in use %.1f MiB, %s goroutines; %.1f KiB resident per stream\n",
		heap/(1<<20), goroutines, float64(loaded-idle)/float64(streams)/1024)
	return nil
}

// runChild holds one SDS stream per ID, each on its own connection, says
// "ready" once every stream has its first response, and waits to be killed.
func runChild(sock string, ids []string) error {
	ctx := context.Background()
	for _, id := range ids {
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
		if err != nil {
			return err
		}
		names := []string{id, "spiffe://example.org"}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: names}); err != nil {
			return err
		}
		first, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("%s: first response: %w", id, err)
		}
		if len(first.Resources) != 2 {
			return fmt.Errorf("%s: %d resources, want the SVID and the bundle", id, len(first.Resources))
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: names, VersionInfo: first.VersionInfo, ResponseNonce: first.Nonce}); err != nil {
			return err
		}
	}
	// The streams stay open, and referenced by their goroutines, until the
	// process is killed.
	fmt.Println("ready")
	select {}
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (last error: %v)", url, timeout, err) //nolint:errorlint // err may be nil: a non-200 answer
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rss is a process's resident set in bytes, from /proc.
func rss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// scrape reads the Go heap in use and the goroutine count from /metrics.
func scrape(url string) (heap float64, goroutines string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "?"
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) != 2 {
			continue
		}
		switch fields[0] {
		case "go_memstats_heap_inuse_bytes":
			heap, _ = strconv.ParseFloat(fields[1], 64)
		case "go_goroutines":
			goroutines = fields[1]
		}
	}
	return heap, goroutines
}

// simulateMesh plays a day of a mesh's schedule and prints what reaches
// the PKI engine and what each node does, per second.
func simulateMesh(nodes, workloads int, caTTL, svidTTL, rootsRefresh time.Duration, issuers int) {
	const day = 24 * time.Hour
	const bucket = time.Minute
	rng := rand.New(rand.NewPCG(1, 2))
	engine := make([]int, int(day/bucket)+1)
	var signs, rootReads, mints int
	for range nodes {
		// Nodes start at random moments of an earlier day, so their
		// timelines are spread as in a mesh that has run for a while.
		start := -time.Duration(rng.Int64N(int64(caTTL)))
		for t := start; t < day; {
			// meshid asks for the successor at 45-55 % of the current
			// intermediate's life (set by its serial: uniform here).
			t += time.Duration(float64(caTTL) * (0.45 + 0.10*rng.Float64()))
			if t >= 0 && t < day {
				signs++
				engine[t/bucket] += 1 + 1 + issuers // roots read before the sign, then the sign
			}
		}
		// Roots are read every roots_refresh between renewals.
		for t := time.Duration(rng.Int64N(int64(rootsRefresh))); t < day; t += rootsRefresh {
			rootReads++
			engine[t/bucket] += 1 + issuers // LIST issuers, then each issuer
		}
		// Each workload's SVID renews at half its life, locally.
		mints += workloads * int(day/(svidTTL/2))
	}
	total := 0
	for _, n := range engine {
		total += n
	}
	peak := slices.Max(engine)
	fmt.Printf("simulated day: %d nodes x %d workloads, intermediates of %s, SVIDs of %s, roots read every %s, %d issuer(s)\n",
		nodes, workloads, caTTL, svidTTL, rootsRefresh, issuers)
	fmt.Printf("  PKI engine: %d sign-intermediate calls (%.4f/s), %d roots refreshes; %.2f requests/s on average, %.2f/s in the busiest minute\n",
		signs, float64(signs)/day.Seconds(), rootReads, float64(total)/day.Seconds(), float64(peak)/bucket.Seconds())
	perNodeEngine := float64(total) / float64(nodes) / day.Seconds()
	fmt.Printf("  per node: %.4f engine requests/s; %.3f SVID mints/s and as many SDS pushes, all local (no engine, no central server)\n",
		perNodeEngine, float64(mints)/float64(nodes)/day.Seconds())
}
