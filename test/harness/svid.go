package harness

import (
	"context"
	"fmt"
	"slices"
)

// SVID is the X509-SVID for id that Envoy serves, as its /certs lists it:
// serial and expiry as meshid issued them.
func (v *Envoy) SVID(ctx context.Context, id string) (Cert, error) {
	certs, err := v.Certs(ctx)
	if err != nil {
		return Cert{}, err
	}
	for _, c := range certs {
		if !c.CA && slices.Contains(c.URIs, id) {
			return c, nil
		}
	}
	return Cert{}, fmt.Errorf("harness: envoy %s serves no SVID for %s yet", v.Name, id)
}
