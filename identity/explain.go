package identity

import (
	"context"
	"fmt"
	"slices"

	"github.com/meshid/meshid/attestor"
)

// Explanation is what meshid sees of one process and what each entry
// makes of it: the answer to "why does this workload get (no) identity?".
type Explanation struct {
	PID       int32          `json:"pid"`
	UID       uint32         `json:"uid"`
	GID       uint32         `json:"gid"`
	Selectors []string       `json:"selectors"`
	Entries   []EntryVerdict `json:"entries"`
}

// EntryVerdict says whether one entry matches, and if not, which of its
// selectors the process lacks.
type EntryVerdict struct {
	SPIFFEID string   `json:"spiffe_id"`
	Source   string   `json:"source"`
	Matched  bool     `json:"matched"`
	Missing  []string `json:"missing,omitempty"`
}

// Explain attests the caller exactly as Watch would and matches it against
// the entries in force, without subscribing it to anything.
func (m *Manager) Explain(ctx context.Context, c attestor.Caller) (Explanation, error) {
	sels, err := m.attestor.Attest(ctx, c)
	if err != nil {
		return Explanation{}, fmt.Errorf("attest pid %d: %w", c.PID, err)
	}
	x := Explanation{PID: c.PID, UID: c.UID, GID: c.GID, Selectors: selectorList(sels), Entries: []EntryVerdict{}}
	for _, e := range m.Entries() {
		v := EntryVerdict{SPIFFEID: e.SPIFFEID.String(), Source: e.Source, Matched: true}
		for _, want := range e.Selectors {
			if !slices.Contains(sels, want) {
				v.Matched = false
				v.Missing = append(v.Missing, want.String())
			}
		}
		x.Entries = append(x.Entries, v)
	}
	return x, nil
}
