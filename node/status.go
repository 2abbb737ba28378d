package node

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/meshid/meshid/authz/bundles"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/buildinfo"
	"github.com/meshid/meshid/sds"
)

// Status is the node's live state as GET /status on the admin socket
// answers it and `meshid status --json` prints it. Its JSON field names
// are a contract for scripts, listed in docs/cli.md § meshid status:
// fields may be added, never renamed or removed.
type Status struct {
	Time            time.Time             `json:"time"`
	Build           buildinfo.Info        `json:"build"`
	TrustDomain     string                `json:"trust_domain"`
	Started         time.Time             `json:"started"`
	SDSStreams      []SDSStream           `json:"sds_streams"`
	WorkloadStreams []WorkloadStream      `json:"workload_streams"`
	SVIDs           []identity.SVIDStatus `json:"svids"`
	CA              CAStatus              `json:"ca"`
	Federated       []FederatedBundle     `json:"federated_bundles"`
	Policy          PolicyStatus          `json:"policy"`
	// DecisionLog is the collector decisions are shipped to; nil without
	// authz.decision_log.service.
	DecisionLog *DecisionLogStatus `json:"decision_log,omitempty"`
}

// Caller is who holds a stream: the kernel's account of the process
// (SO_PEERCRED at accept), the selectors it was attested with, and the
// SPIFFE IDs the entries in force give it.
type Caller struct {
	PID       int32    `json:"pid"`
	UID       uint32   `json:"uid"`
	GID       uint32   `json:"gid"`
	Selectors []string `json:"selectors"`
	SPIFFEIDs []string `json:"spiffe_ids"`
}

// SDSStream is one open SDS stream.
type SDSStream struct {
	Caller
	API          string        `json:"api"`     // sotw or delta
	NodeID       string        `json:"node_id"` // as Envoy says; informative only
	Started      time.Time     `json:"started"`
	Version      string        `json:"version"` // of the last response
	Responses    int           `json:"responses"`
	LastResponse time.Time     `json:"last_response,omitzero"`
	LastACK      time.Time     `json:"last_ack,omitzero"`
	LastNACK     *NACK         `json:"last_nack,omitempty"`
	Resources    []SDSResource `json:"resources"`
}

// SDSResource is the last of one secret sent on a stream; Envoy holds it
// unless the stream's last NACK rejected it.
type SDSResource struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Serial and Expires are those of the SVID a tls_certificate carries.
	Serial  string    `json:"serial,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
}

// NACK is Envoy's last rejection on a stream.
type NACK struct {
	At      time.Time `json:"at"`
	Version string    `json:"version"`
	Message string    `json:"message"`
}

// WorkloadStream is one open Workload API stream.
type WorkloadStream struct {
	Caller
	Method       string    `json:"method"`
	Started      time.Time `json:"started"`
	Responses    int       `json:"responses"`
	LastResponse time.Time `json:"last_response,omitzero"`
}

// CAStatus is the CA's timeline.
type CAStatus struct {
	Source      string          `json:"source"` // self-signed, files, or the upstream authority
	Generations []ca.Generation `json:"generations"`
}

// FederatedBundle is another trust domain's bundle, where it comes from
// and how old meshid's copy is.
type FederatedBundle struct {
	identity.FederatedBundle
	BundleFile  string `json:"bundle_file"`
	EndpointURL string `json:"endpoint_url,omitempty"`
	AgeSeconds  int64  `json:"age_seconds"` // since Since
}

// PolicyStatus is the policy set deciding now, and the bundles it is
// compiled from (authz.bundles).
type PolicyStatus struct {
	Revision    string           `json:"revision"`
	Dir         string           `json:"dir"`
	RegoVersion string           `json:"rego_version"`
	Files       int              `json:"files"`
	Bundles     []bundles.Status `json:"bundles"`
}

// status gathers the node's state now. Each part copies under its own
// lock; the parts are read one after the other, so a rotation between two
// reads shows in one and not yet in the other.
func (n *Node) status() Status {
	now := time.Now()
	st := Status{
		Time:            now,
		Build:           buildinfo.Read(),
		TrustDomain:     n.cfg.TrustDomain,
		Started:         n.started,
		SDSStreams:      []SDSStream{},
		WorkloadStreams: []WorkloadStream{},
		SVIDs:           n.ids.SVIDs(),
		CA:              CAStatus{Source: n.ca.Source(), Generations: n.ca.Generations()},
		Federated:       []FederatedBundle{},
	}
	for _, s := range n.sds.Streams() {
		st.SDSStreams = append(st.SDSStreams, sdsStream(s))
	}
	for _, s := range n.workload.Streams() {
		st.WorkloadStreams = append(st.WorkloadStreams, WorkloadStream{
			Caller: callerOf(s.Subscription), Method: s.Method, Started: s.Started,
			Responses: s.Responses, LastResponse: s.LastResponse,
		})
	}
	for _, b := range n.ids.Federated() {
		f := FederatedBundle{FederatedBundle: b, AgeSeconds: int64(now.Sub(b.Since).Seconds())}
		for _, c := range n.cfg.Federation.Bundles {
			if c.TrustDomain == b.TrustDomain {
				f.BundleFile, f.EndpointURL = c.BundleFile, c.EndpointURL
			}
		}
		st.Federated = append(st.Federated, f)
	}
	if e := n.authz.srv.Engine(); e != nil {
		p := e.Policy()
		st.Policy = PolicyStatus{Revision: p.Revision, Dir: p.Dir, RegoVersion: p.RegoVersion, Files: len(p.Files)}
	}
	st.Policy.Bundles = n.authz.bundleStatus()
	if st.Policy.Bundles == nil {
		st.Policy.Bundles = []bundles.Status{}
	}
	st.DecisionLog = n.decisionLogStatus()
	return st
}

func sdsStream(s sds.Stream) SDSStream {
	out := SDSStream{
		Caller: callerOf(s.Subscription), API: s.API, NodeID: s.NodeID, Started: s.Started,
		Version: s.Version, Responses: s.Responses, LastResponse: s.LastResponse, LastACK: s.LastACK,
		Resources: []SDSResource{},
	}
	if s.LastNACK != nil {
		out.LastNACK = &NACK{At: s.LastNACK.At, Version: s.LastNACK.Version, Message: s.LastNACK.Message}
	}
	for _, r := range s.Resources {
		out.Resources = append(out.Resources, SDSResource{Name: r.Name, Version: r.Version, Serial: r.Serial, Expires: r.Expires})
	}
	return out
}

// callerOf reads the caller of a subscription the node's adapters made:
// identity's, as sds and workload were handed it.
func callerOf(sub any) Caller {
	var s *identity.Subscription
	switch v := sub.(type) {
	case *identity.Subscription:
		s = v
	case workloadSubscription:
		s = v.Subscription
	default:
		return Caller{}
	}
	c := s.Status()
	return Caller{PID: c.PID, UID: c.UID, GID: c.GID, Selectors: c.Selectors, SPIFFEIDs: c.SPIFFEIDs}
}

// statusHandler serves GET /status on the admin socket.
func (n *Node) statusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.status())
	})
}
