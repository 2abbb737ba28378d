package node

import (
	"context"

	"google.golang.org/grpc/credentials"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/sds"
	"github.com/meshid/meshid/workload"
)

// watch turns the AuthInfo sds and workload found on the connection into
// the kernel's view of the caller and subscribes it to its identities.
func watch(ctx context.Context, m *identity.Manager, who credentials.AuthInfo) (*identity.Subscription, error) {
	caller, err := attestor.CallerFromAuthInfo(who)
	if err != nil {
		return nil, err
	}
	return m.Watch(ctx, caller)
}

// workloadIdentities adapts the identity manager to the interface the
// Workload API server declares.
type workloadIdentities struct{ m *identity.Manager }

func (w workloadIdentities) Watch(ctx context.Context, who credentials.AuthInfo) (workload.Subscription, error) {
	sub, err := watch(ctx, w.m, who)
	if err != nil {
		return nil, err
	}
	return workloadSubscription{sub}, nil
}

type workloadSubscription struct{ *identity.Subscription }

func (s workloadSubscription) JWTSVIDs(audience []string) ([]workload.JWTSVID, error) {
	svids, err := s.Subscription.JWTSVIDs(audience)
	if err != nil {
		return nil, err
	}
	out := make([]workload.JWTSVID, len(svids))
	for i, svid := range svids {
		out[i] = workload.JWTSVID{ID: svid.ID, Token: svid.Token}
	}
	return out, nil
}

// SDSIdentities is the identity manager as the SDS server consumes it, for
// whatever serves SDS over it: the node, and bench/sdsfanout.
func SDSIdentities(m *identity.Manager) sds.Identities { return sdsIdentities{m} }

// sdsIdentities adapts the identity manager to the interface sds declares.
type sdsIdentities struct{ m *identity.Manager }

func (a sdsIdentities) Watch(ctx context.Context, who credentials.AuthInfo) (sds.Subscription, error) {
	sub, err := watch(ctx, a.m, who)
	if err != nil {
		return nil, err
	}
	return sub, nil
}
