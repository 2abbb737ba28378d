package sds

import (
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/internal/echo"
	"github.com/meshid/meshid/internal/logpace"
)

// A resource an Envoy asks for and is not entitled to (a SPIFFE ID that
// is not its own, a trust domain it may not validate) fails a
// state-of-the-world response and a fetch, and stays absent on a delta
// stream, where Envoy keeps warming the listener that waits for it. Envoy
// logs its side; meshid's is a WARN line naming the resource and what the
// caller is entitled to, so the operator sees both ends of a typo in an
// SDS config. Lines are paced per caller identity (bounded by the
// entries, unlike the names a caller may make up), each saying how many
// were held back; the metric counts every refusal.
const refusalInterval = 10 * time.Second

// maxRefusalKeys bounds the caller identities the pacer remembers.
const maxRefusalKeys = 1024

// notEntitledError refuses a resource name the caller may not have.
type notEntitledError struct{ name string }

func (e notEntitledError) Error() string { return e.GRPCStatus().Message() }

func (e notEntitledError) GRPCStatus() *status.Status {
	return status.Newf(codes.InvalidArgument, "resource %s: not an identity or trust domain this caller is entitled to", echo.Quote(e.name, maxEcho))
}

func newRefusalPacer() *logpace.Pacer[string] {
	return logpace.New[string](refusalInterval, maxRefusalKeys, nil)
}

// refused logs and counts a refusal of names to the caller of v, if err
// is one; any other error is left to the caller.
func (s *Server) refused(api string, v view, err error) {
	var ne notEntitledError
	if !errors.As(err, &ne) {
		return
	}
	s.refusedNames(api, v, []string{ne.name})
}

// refusedNames logs and counts names refused to the caller of v.
func (s *Server) refusedNames(api string, v view, names []string) {
	if len(names) == 0 {
		return
	}
	s.metrics.refused.WithLabelValues(api).Add(float64(len(names)))
	caller := ""
	if len(v.x.SVIDs) > 0 {
		caller = v.x.SVIDs[0].ID.String()
	}
	if ok, unlogged := s.refusals.Allow(caller); ok {
		s.log.Warn("refused SDS resources the caller is not entitled to; check the names in its Envoy config",
			"api", api, "resources", echo.ClipAll(names, maxEcho), "entitled_to", echo.ClipAll(v.names(), maxEcho),
			"unlogged_refusals", unlogged)
	}
}
