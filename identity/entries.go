package identity

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/internal/yamlfile"
)

// Entry says which workloads get which SPIFFE ID: a caller whose selectors
// include every one of Selectors is entitled to SPIFFEID, or, for a
// template entry, to the ID Template makes of its selectors.
type Entry struct {
	// SPIFFEID is zero in a template entry as loaded; For fills it for
	// one caller.
	SPIFFEID  spiffeid.ID
	Template  *Template
	Selectors []attestor.Selector
	X509TTL   time.Duration // 0 means the daemon's default
	JWTTTL    time.Duration // 0 means the daemon's default
	DNSNames  []string
	// FederatesWith lists other trust domains whose bundles the caller may
	// use to validate peers: their X.509 roots and JWT keys, whichever
	// federation.bundles has for them.
	FederatesWith []spiffeid.TrustDomain
	Source        string // "entries.yaml:12", for messages
}

// Matches reports whether a caller with the given selectors satisfies every
// selector of the entry and, for a template entry, holds a value for every
// placeholder (a valid one or not: see For).
func (e Entry) Matches(have []attestor.Selector) bool {
	for _, want := range e.Selectors {
		if !slices.Contains(have, want) {
			return false
		}
	}
	if e.Template != nil {
		for _, g := range e.Template.Groups() {
			if _, ok := valueIn(have, g); !ok {
				return false
			}
		}
	}
	return true
}

// For returns the entry as it applies to a caller with the given
// selectors, with SPIFFEID filled in for a template entry. ok is false
// when the entry does not match the caller; err says why a template
// entry that matches cannot give it an ID (a value that is not one valid
// path segment), and then the caller gets nothing from it.
func (e Entry) For(have []attestor.Selector) (_ Entry, ok bool, err error) {
	if !e.Matches(have) {
		return Entry{}, false, nil
	}
	if e.Template == nil {
		return e, true, nil
	}
	id, err := e.Template.Fill(have)
	if err != nil {
		return Entry{}, false, fmt.Errorf("template %s: %w", e.Template, err)
	}
	e.SPIFFEID = id
	return e, true, nil
}

// Name is the entry's SPIFFE ID, or its template, for messages.
func (e Entry) Name() string {
	if e.Template != nil && e.SPIFFEID.IsZero() {
		return e.Template.String()
	}
	return e.SPIFFEID.String()
}

// The shortest lifetimes an entry may ask for: the floors of svid.x509_ttl
// and svid.jwt_ttl in meshid.yaml, which the node's tests hold equal. Below
// them an SVID is stale before it is served (a 1ns TTL made already expired
// certificates, issue 13): a renewal at half-life must still leave Envoy
// time to take the new one, and a token time to cross the network.
const (
	MinX509TTL = 10 * time.Second
	MinJWTTTL  = 30 * time.Second
)

type entriesFile struct {
	Entries []rawEntry `yaml:"entries"`
}

type rawEntry struct {
	SPIFFEID string `yaml:"spiffe_id"`
	// Template is a SPIFFE ID with {placeholders}, instead of SPIFFEID.
	Template  string        `yaml:"spiffe_id_template"`
	Selectors []string      `yaml:"selectors"`
	X509TTL   time.Duration `yaml:"x509_ttl"`
	JWTTTL    time.Duration `yaml:"jwt_ttl"`
	DNSNames  []string      `yaml:"dns_names"`
	// FederatesWith names trust domains, e.g. partner.example.
	FederatesWith []string `yaml:"federates_with"`
}

// LoadEntries reads an entries file and validates every entry against the
// trust domain. All problems are reported together, each as file:line.
func LoadEntries(path string, td spiffeid.TrustDomain) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	return ParseEntries(path, data, td)
}

// ParseEntries is LoadEntries for bytes already read; name is used in messages.
func ParseEntries(name string, data []byte, td spiffeid.TrustDomain) ([]Entry, error) {
	entries, errs := parseEntries(name, data, td)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return entries, nil
}

// parseEntries returns the valid entries and a problem, with file:line,
// for each invalid one; lint reports both where loading refuses the file.
func parseEntries(name string, data []byte, td spiffeid.TrustDomain) ([]Entry, []error) {
	var f entriesFile
	doc, err := yamlfile.Decode(name, data, &f)
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	entries := make([]Entry, 0, len(f.Entries))
	seen := map[string]string{} // id + selectors → where first defined
	for i, raw := range f.Entries {
		at := func(path ...any) []any { return append([]any{"entries", i}, path...) }
		problems := len(errs)
		e := Entry{X509TTL: raw.X509TTL, JWTTTL: raw.JWTTTL, DNSNames: raw.DNSNames, Source: fmt.Sprintf("%s:%d", name, doc.Line(at()...))}

		idText := raw.SPIFFEID + raw.Template // one of them, for messages
		id, err := spiffeid.FromString(raw.SPIFFEID)
		switch {
		case raw.SPIFFEID != "" && raw.Template != "":
			errs = append(errs, doc.Errorf(at("spiffe_id_template"), "entry has both spiffe_id and spiffe_id_template: give one"))
		case raw.Template != "":
			t, err := ParseTemplate(raw.Template, td)
			if err != nil {
				errs = append(errs, doc.Errorf(at("spiffe_id_template"), "spiffe_id_template %q: %v", raw.Template, err))
			}
			e.Template = t
		case raw.SPIFFEID == "":
			errs = append(errs, doc.Errorf(at(), "entry has no spiffe_id (nor spiffe_id_template)"))
		case err != nil:
			errs = append(errs, doc.Errorf(at("spiffe_id"), "spiffe_id %q: %v", raw.SPIFFEID, err))
		case !id.MemberOf(td):
			errs = append(errs, doc.Errorf(at("spiffe_id"), "spiffe_id %q is outside the trust domain %q", raw.SPIFFEID, td.Name()))
		case id.Path() == "":
			errs = append(errs, doc.Errorf(at("spiffe_id"), "spiffe_id %q names the trust domain itself, not a workload; add a path", raw.SPIFFEID))
		default:
			e.SPIFFEID = id
		}

		// A template's placeholders are selectors too, with any value: an
		// entry with only those matches every caller that holds them.
		if len(raw.Selectors) == 0 && raw.Template == "" {
			errs = append(errs, doc.Errorf(at(), "entry %q has no selectors: it would match every caller", raw.SPIFFEID))
		}
		for j, s := range raw.Selectors {
			sel, err := attestor.ParseSelector(s)
			if err != nil {
				errs = append(errs, doc.Errorf(at("selectors", j), "%v", err))
				continue
			}
			e.Selectors = append(e.Selectors, sel)
		}
		if raw.X509TTL != 0 && raw.X509TTL < MinX509TTL {
			errs = append(errs, doc.Errorf(at("x509_ttl"), "x509_ttl %s is shorter than the minimum %s", raw.X509TTL, MinX509TTL))
		}
		for j, name := range raw.FederatesWith {
			fed, err := spiffeid.TrustDomainFromString(name)
			switch {
			case err != nil:
				errs = append(errs, doc.Errorf(at("federates_with", j), "federates_with %q: %v", name, err))
			case fed == td:
				errs = append(errs, doc.Errorf(at("federates_with", j), "federates_with %q is this node's own trust domain", name))
			default:
				e.FederatesWith = append(e.FederatesWith, fed)
			}
		}
		if raw.JWTTTL != 0 && raw.JWTTTL < MinJWTTTL {
			errs = append(errs, doc.Errorf(at("jwt_ttl"), "jwt_ttl %s is shorter than the minimum %s", raw.JWTTTL, MinJWTTTL))
		}

		key := idText + "\x00" + strings.Join(slices.Sorted(slices.Values(raw.Selectors)), "\x00")
		if first, dup := seen[key]; dup {
			errs = append(errs, doc.Errorf(at(), "entry %q duplicates the one at %s", idText, first))
		}
		seen[key] = e.Source
		if len(errs) == problems {
			entries = append(entries, e)
		}
	}
	return entries, errs
}
