package node

import (
	"context"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/sds"
	"github.com/meshid/meshid/workload"
)

// workloadIdentities adapts the identity manager to the interface the
// Workload API server declares.
type workloadIdentities struct{ m *identity.Manager }

func (w workloadIdentities) Watch(ctx context.Context) (workload.Subscription, error) {
	sub, err := w.m.Watch(ctx)
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

// sdsIdentities adapts the identity manager to the interface sds declares.
type sdsIdentities struct{ m *identity.Manager }

func (a sdsIdentities) Watch(ctx context.Context) (sds.Subscription, error) {
	sub, err := a.m.Watch(ctx)
	if err != nil {
		return nil, err
	}
	return sub, nil
}
