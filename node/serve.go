package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// serveGRPC serves srv on lis until ctx ends, then gives in-flight calls
// shutdownGrace to finish before cutting them.
func serveGRPC(ctx context.Context, srv *grpc.Server, lis net.Listener) error {
	return serveUntil(ctx, func() error { return srv.Serve(lis) }, func() {
		stopped := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(shutdownGrace):
			srv.Stop()
			<-stopped
		}
	})
}

// serveHTTP is serveGRPC for the admin endpoint.
func serveHTTP(ctx context.Context, srv *http.Server, lis net.Listener) error {
	serve := func() error {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return serveUntil(ctx, serve, func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			srv.Close()
		}
	})
}

// serveUntil runs serve until it fails or ctx ends; then it calls stop,
// which must make serve return, and returns serve's result.
func serveUntil(ctx context.Context, serve func() error, stop func()) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stop()
	return <-errc
}
