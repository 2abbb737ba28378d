package node

import (
	"errors"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// meshid's admin endpoints are split by what they reveal (issue 13):
//
//   - admin.address (TCP) serves what any local user may see: /healthz,
//     /readyz and /metrics, for probes and Prometheus;
//   - admin.socket_path (a Unix socket of mode 0600, so root and meshid's
//     uid only) serves what describes other processes or the entries:
//     /explain and /status, which the CLI (`meshid entry explain`,
//     `meshid status`) uses.

// adminHandler is the public admin endpoint.
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := n.readiness(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	// Said plainly, for scripts written when /explain was served here.
	mux.HandleFunc("GET /explain", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "explain is served on the root-only admin socket (admin.socket_path): run meshid entry explain as root", http.StatusNotFound)
	})
	return mux
}

// privateHandler is the root-only admin endpoint.
func (n *Node) privateHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /explain", ExplainHandler(n.ids))
	mux.Handle("GET /status", n.statusHandler())
	return mux
}

// readiness says why the node is not ready: still starting, a CA that
// cannot rotate, or an authz bundle not activated yet (while none is,
// every request is denied). A failing rotation makes the node unready while the CA
// still signs, hours before SVIDs stop: readiness is where operators look
// first, and by the time signing stops it is too late to act.
func (n *Node) readiness() error {
	if !n.ready.Load() {
		return errors.New("starting")
	}
	return errors.Join(n.ca.Health(), n.authz.ready())
}
