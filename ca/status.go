package ca

import "time"

// States of a generation on the timeline, as Generations reports them.
const (
	StateActive  = "active"  // signs now
	StateNext    = "next"    // published in the bundles, signs from SignsFrom
	StateRetired = "retired" // a successor signs; trusted until NotAfter
	StateExpired = "expired" // the last one, past NotAfter, kept until a successor is written; never signs
)

// Generation describes one CA generation on the timeline, for operators
// (meshid status): what it is and where it stands, never its keys.
type Generation struct {
	Name      string    `json:"name"`   // its directory under data_dir
	Serial    string    `json:"serial"` // of the CA certificate, lower-case hex
	JWTKeyID  string    `json:"jwt_key_id"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// SignsFrom is when it starts signing: at 5/6 of its predecessor's
	// life, or at its own start for the first.
	SignsFrom time.Time `json:"signs_from"`
	State     string    `json:"state"`
}

// Generations returns the listed generations, oldest first, as they stand
// now. It copies under the read lock, so it never holds up minting.
func (a *Authority) Generations() []Generation {
	now := a.clock()
	a.mu.RLock()
	defer a.mu.RUnlock()
	active := a.activeLocked(now)
	out := make([]Generation, len(a.gens))
	seen := false // whether active came before
	for i, g := range a.gens {
		c := g.cert()
		out[i] = Generation{
			Name:      g.name,
			Serial:    c.SerialNumber.Text(16),
			JWTKeyID:  g.jwtKID,
			NotBefore: c.NotBefore,
			NotAfter:  c.NotAfter,
			SignsFrom: a.signsFromLocked(g),
		}
		switch {
		case active == nil:
			out[i].State = StateExpired
		case g == active:
			out[i].State, seen = StateActive, true
		case seen:
			out[i].State = StateNext
		default:
			out[i].State = StateRetired
		}
	}
	return out
}

// Source says where the CA's certificates come from: "self-signed",
// "files" (ca.upstream's files) or the upstream authority (ca.upstream.vault).
func (a *Authority) Source() string { return a.upstreamName() }
