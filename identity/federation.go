package identity

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

// CheckFederation reports, at each entry's file:line, a federates_with
// naming a trust domain no bundle is configured for: the entry would
// silently not get it.
func CheckFederation(entries []Entry, federated *spiffebundle.Set) error {
	var errs []error
	for _, e := range entries {
		for _, td := range e.FederatesWith {
			if !federated.Has(td) {
				errs = append(errs, fmt.Errorf("%s: federates_with %q, but federation.bundles has no bundle for it", e.Source, td.Name()))
			}
		}
	}
	return errors.Join(errs...)
}

// federatedWith lists the trust domains entries federate with, sorted and
// once each, so two sets of entries compare equal when they grant the same.
func federatedWith(entries []Entry) []string {
	var names []string
	for _, e := range entries {
		for _, td := range e.FederatesWith {
			names = append(names, td.Name())
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(names)))
}
