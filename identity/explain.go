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
// selectors the process lacks. For a template entry SPIFFEID is the ID the
// process gets from it, when it matches; Missing names placeholders it has
// no value for as {group}, and Refused says why the value it has cannot
// make an ID.
type EntryVerdict struct {
	SPIFFEID string   `json:"spiffe_id,omitempty"`
	Template string   `json:"spiffe_id_template,omitempty"`
	Source   string   `json:"source"`
	Matched  bool     `json:"matched"`
	Missing  []string `json:"missing,omitempty"`
	Refused  string   `json:"refused,omitempty"`
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
		x.Entries = append(x.Entries, verdict(e, sels))
	}
	return x, nil
}

func verdict(e Entry, sels []attestor.Selector) EntryVerdict {
	v := EntryVerdict{Source: e.Source}
	if e.Template == nil {
		v.SPIFFEID = e.SPIFFEID.String()
	} else {
		v.Template = e.Template.String()
	}
	for _, want := range e.Selectors {
		if !slices.Contains(sels, want) {
			v.Missing = append(v.Missing, want.String())
		}
	}
	if e.Template != nil {
		for _, g := range e.Template.Groups() {
			if _, ok := valueIn(sels, g); !ok {
				v.Missing = append(v.Missing, "{"+g+"}")
			}
		}
	}
	filled, ok, err := e.For(sels)
	switch {
	case err != nil:
		v.Refused = err.Error()
	case ok:
		v.Matched, v.SPIFFEID = true, filled.SPIFFEID.String()
	}
	return v
}
