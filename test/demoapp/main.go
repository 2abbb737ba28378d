// Command demoapp is the workload of meshid's demo mesh and end-to-end tests:
// a tiny HTTP service that reports who called it, or forwards to one upstream.
//
// Without -upstream it is a backend: every request gets 200 and a JSON echo
// that includes the caller's SPIFFE ID as its sidecar vouched for it in the
// x-forwarded-client-cert header. With -upstream it is a frontend:
// GET /call/<rest> becomes GET <upstream>/<rest>, and the upstream's status
// and body are relayed unchanged, so a test sees exactly what the mesh did.
// With -route NAME=URL (repeatable) it is both, as a service in the middle
// of a chain is: GET /call/NAME/<rest> becomes GET URL/<rest> with Host:
// NAME (a sidecar's outbound listener routes its upstreams by host), and
// every other path gets the backend's echo.
//
//	demoapp -name backend -listen 127.0.0.1:8080
//	demoapp -name frontend -listen 127.0.0.1:8081 -upstream http://127.0.0.1:9000
//	demoapp -name api -listen 127.0.0.1:8080 -route db=http://127.0.0.1:15001
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	name := flag.String("name", "demoapp", "service name reported in responses and logs")
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve HTTP on")
	upstream := flag.String("upstream", "", "frontend role: base URL that /call/<rest> is forwarded to")
	var routes []string
	flag.Func("route", "NAME=URL: forward /call/NAME/<rest> to URL/<rest> with Host: NAME, and echo every other path (repeatable)", func(v string) error {
		routes = append(routes, v)
		return nil
	})
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", *name)
	if err := run(*name, *listen, *upstream, routes, log); err != nil {
		log.Error("demoapp failed", "err", err)
		os.Exit(1)
	}
}

func run(name, listen, upstream string, routes []string, log *slog.Logger) error {
	h, err := newHandler(name, upstream, routes, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving", "listen", ln.Addr().String(), "upstream", upstream)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newHandler returns the backend handler when upstream and routes are
// empty, the frontend handler for upstream, and both for routes, wrapped in
// one-line-per-request logging.
func newHandler(name, upstream string, routes []string, log *slog.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// No proxy from the environment: the upstream is always the local
	// sidecar, and an HTTP_PROXY would silently route around it.
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{Proxy: nil},
	}
	switch {
	case upstream != "" && len(routes) > 0:
		return nil, fmt.Errorf("-upstream and -route exclude each other")
	case upstream != "":
		u, err := absoluteURL("-upstream", upstream)
		if err != nil {
			return nil, err
		}
		mux.Handle("GET /call/{rest...}", frontend{upstream: u, client: client})
	default:
		for _, r := range routes {
			name, target, ok := strings.Cut(r, "=")
			if !ok || name == "" || strings.Contains(name, "/") {
				return nil, fmt.Errorf("-route %q is not NAME=URL", r)
			}
			u, err := absoluteURL("-route "+name, target)
			if err != nil {
				return nil, err
			}
			mux.Handle("GET /call/"+name+"/{rest...}", frontend{upstream: u, client: client, host: name})
		}
		mux.Handle("/", backend{name: name})
	}
	return logRequests(mux, log), nil
}

func absoluteURL(flag, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("%s %q is not an absolute URL like http://127.0.0.1:9000", flag, s)
	}
	return u, nil
}
