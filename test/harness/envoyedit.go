package harness

import (
	"context"

	"github.com/meshid/meshid/envoy"
)

// StartEnvoyEdited is StartEnvoy with the rendered bootstrap changed by
// edit first: a sidecar configured in a way the generator refuses to
// write, as an operator's hand-written bootstrap may be (asking for a
// bundle as its certificate, say), to see what meshid does with it.
func (e *Env) StartEnvoyEdited(ctx context.Context, name string, sc envoy.Sidecar, uid uint32, edit func(bootstrap []byte) []byte) (*Envoy, error) {
	return e.startEnvoy(ctx, nil, name, sc, uid, edit)
}
