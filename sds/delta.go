package sds

import (
	"crypto/rand"
	"maps"
	"slices"
	"strconv"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/internal/echo"
)

// wildcardName subscribes a delta stream to everything the caller is
// entitled to.
const wildcardName = "*"

// deltaState is what one delta stream has agreed with its Envoy: what it
// subscribed to, and which version of each secret it holds.
type deltaState struct {
	started    bool
	wildcard   bool
	subscribed map[string]bool
	has        map[string]string // name → version the Envoy holds
	plainCA    bool
	nonce      string
	system     int
	view       view // what the last response was built from
	// refused are the subscribed names the caller is not entitled to,
	// as of the last response; newlyRefused those of them the last
	// response found, for the server to log once.
	refused      map[string]bool
	newlyRefused []string
}

func newDeltaState() *deltaState {
	return &deltaState{subscribed: map[string]bool{}, has: map[string]string{}, refused: map[string]bool{}}
}

// DeltaSecrets answers one Envoy's incremental stream (api_type
// DELTA_GRPC): only secrets that changed are sent, and secrets the caller
// is no longer entitled to are named in removed_resources. Like
// StreamSecrets, it is one loop over requests and identity changes.
func (s *Server) DeltaSecrets(stream secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	ctx := stream.Context()
	sub, err := s.watch(ctx)
	if err != nil {
		return err
	}
	defer sub.Close()
	defer s.metrics.open(apiDelta)()
	rec, untrack := s.track(apiDelta, sub)
	defer untrack()

	reqs, recvErr := receive(ctx, stream.Recv)
	st := newDeltaState()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Exited():
			return s.callerExited(apiDelta)
		case err := <-recvErr:
			return endOfStream(err)
		case req := <-reqs:
			if err := st.apply(req); err != nil {
				return err
			}
			if req.Node != nil {
				nodeSeen(rec, req.Node.Id)
			}
			if req.ResponseNonce != "" && req.ResponseNonce == st.nonce {
				if req.ErrorDetail != nil {
					s.nack(rec, apiDelta, strconv.Itoa(st.system), "", req.ResourceNamesSubscribe, req.ErrorDetail.GetMessage())
					continue
				}
				acked(rec, s.clock())
			}
			if len(req.ResourceNamesSubscribe) == 0 && len(req.ResourceNamesUnsubscribe) == 0 && req.ResponseNonce != "" {
				continue // an ACK, or a stale NACK: nothing new to say
			}
		case <-sub.Changed():
			if !st.started {
				continue
			}
		}

		resp, err := st.next(sub)
		if err != nil {
			return err
		}
		s.refusedNames(apiDelta, st.view, st.newlyRefused)
		if resp == nil {
			continue
		}
		if exited(sub) {
			return s.callerExited(apiDelta) // it may have exited while this was built
		}
		versions := make(map[string]string, len(resp.Resources))
		for _, r := range resp.Resources {
			versions[r.Name] = r.Version
		}
		recordSent(rec, s.clock(), resp.SystemVersionInfo, st.view, false, versions, resp.RemovedResources)
		if err := stream.Send(resp); err != nil {
			return err
		}
		s.metrics.responses.WithLabelValues(apiDelta).Inc()
		s.log.Debug("sent secrets", "api", apiDelta, "system_version", resp.SystemVersionInfo,
			"updated", len(resp.Resources), "removed", echo.ClipAll(resp.RemovedResources, maxEcho))
	}
}

// apply records a request's subscription changes. The first request with
// no names subscribes to everything, as xDS's legacy wildcard does.
func (st *deltaState) apply(req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := checkRequest(req.TypeUrl, req.ResourceNamesSubscribe); err != nil {
		return err
	}
	if req.Node != nil {
		st.plainCA = wantsPlainTrustedCA(req.Node)
	}
	if !st.started {
		// What Envoy says it holds is bounded as what it may subscribe to.
		if err := checkNames(slices.Collect(maps.Keys(req.InitialResourceVersions))); err != nil {
			return err
		}
		st.started = true
		st.wildcard = len(req.ResourceNamesSubscribe) == 0
		// After a reconnect, Envoy says what it still holds: do not send
		// it again unless it changed.
		maps.Copy(st.has, req.InitialResourceVersions)
	}
	for _, n := range req.ResourceNamesSubscribe {
		if n == wildcardName {
			st.wildcard = true
		} else {
			st.subscribed[n] = true
		}
	}
	for _, n := range req.ResourceNamesUnsubscribe {
		if n == wildcardName {
			st.wildcard = false
		} else {
			delete(st.subscribed, n)
			delete(st.has, n)
			delete(st.refused, n)
		}
	}
	if len(st.subscribed) > maxResourceNames {
		return status.Errorf(codes.InvalidArgument, "%d resource names subscribed; at most %d are served per stream", len(st.subscribed), maxResourceNames)
	}
	return nil
}

// next computes the response that brings the Envoy up to date, or nil when
// it already is. A caller that has no identity at all on the first
// response is refused, as on a state-of-the-world stream; one that loses
// its identity later has its secrets removed.
func (st *deltaState) next(sub Subscription) (*discoveryv3.DeltaDiscoveryResponse, error) {
	x, err := sub.Current()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "identities not available: %v", err)
	}
	v := view{x: x, plainTrustedCA: st.plainCA}
	st.view = v
	if len(x.SVIDs) == 0 && st.system == 0 {
		return nil, errNoIdentity
	}

	wanted := slices.Collect(maps.Keys(st.subscribed))
	if st.wildcard {
		wanted = append(wanted, v.names()...)
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: secretType}
	present := map[string]bool{}
	st.newlyRefused = st.newlyRefused[:0]
	for _, name := range slices.Compact(slices.Sorted(slices.Values(wanted))) {
		secret, err := v.secret(name)
		switch status.Code(err) {
		case codes.OK:
			delete(st.refused, name)
		case codes.InvalidArgument:
			if !st.refused[name] {
				st.refused[name] = true
				st.newlyRefused = append(st.newlyRefused, name)
			}
			continue // not (or no longer) entitled: absent
		case codes.PermissionDenied:
			continue // no identity at all (identity logs the caller's selectors): absent
		default:
			return nil, err
		}
		present[name] = true
		encoded, err := encode([]*tlsv3.Secret{secret})
		if err != nil {
			return nil, err
		}
		version := digest(encoded[0])
		if st.has[name] == version {
			continue
		}
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Version: version, Resource: encoded[0]})
	}
	for _, name := range slices.Sorted(maps.Keys(st.has)) {
		if !present[name] {
			resp.RemovedResources = append(resp.RemovedResources, name)
		}
	}
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 {
		return nil, nil
	}

	for _, r := range resp.Resources {
		st.has[r.Name] = r.Version
	}
	for _, name := range resp.RemovedResources {
		delete(st.has, name)
	}
	st.system++
	st.nonce = rand.Text()
	resp.SystemVersionInfo = strconv.Itoa(st.system)
	resp.Nonce = st.nonce
	return resp, nil
}
