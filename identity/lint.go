package identity

import (
	"cmp"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/attestor"
)

// Finding is one problem lint found in an entries file.
type Finding struct {
	Source  string `json:"source"` // file:line
	Level   string `json:"level"`  // LevelError or LevelWarning
	Check   string `json:"check"`  // a short name, e.g. "path-without-uid"
	Message string `json:"message"`
}

// Lint levels: an error is a way to get an identity that should not
// exist or an entry that cannot work; a warning is worth a look.
const (
	LevelError   = "error"
	LevelWarning = "warning"
)

// LintOptions says what the entries are checked against.
type LintOptions struct {
	TrustDomain spiffeid.TrustDomain
	// CATTL is the CA's lifetime; an SVID cannot outlive its CA.
	CATTL time.Duration
	// Types are the selector types the daemon attests ("unix", "docker",
	// "k8s"); an entry needing another never matches.
	Types []string
}

// LintFile reads and lints an entries file.
func LintFile(path string, o LintOptions) ([]Finding, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	return LintEntries(path, data, o), nil
}

// LintEntries reports what loading would refuse and, for the entries that
// would load, what another workload could exploit or what cannot work,
// ordered by line.
func LintEntries(name string, data []byte, o LintOptions) []Finding {
	entries, errs := parseEntries(name, data, o.TrustDomain)
	var out []Finding
	for _, err := range flatten(errs) {
		source, msg := splitSource(err.Error())
		out = append(out, Finding{Source: source, Level: LevelError, Check: "invalid", Message: msg + " (meshid refuses the whole file)"})
	}
	for _, e := range entries {
		out = append(out, lintEntry(e, o)...)
	}
	out = append(out, lintPairs(entries)...)
	slices.SortStableFunc(out, func(a, b Finding) int { return cmp.Compare(lineOf(a.Source), lineOf(b.Source)) })
	return out
}

func lintEntry(e Entry, o LintOptions) []Finding {
	var out []Finding
	add := func(level, check, format string, args ...any) {
		out = append(out, Finding{Source: e.Source, Level: level, Check: check, Message: e.SPIFFEID.String() + ": " + fmt.Sprintf(format, args...)})
	}
	if level, check, why := weakness(e.Selectors); level != "" {
		add(level, check, "%s", why)
	}
	for _, typ := range selectorTypes(e.Selectors) {
		if !slices.Contains(o.Types, typ) {
			add(LevelError, "never-matches", "uses %s selectors, but meshid is not configured to attest %s (add a %s section to meshid.yaml)", typ, typ, typ)
		}
	}
	if o.CATTL > 0 && e.X509TTL > o.CATTL {
		add(LevelError, "ttl-above-ca", "x509_ttl %s is longer than ca.ttl %s: every SVID is cut short at its CA's expiry", e.X509TTL, o.CATTL)
	}
	if o.CATTL > 0 && e.JWTTTL > o.CATTL {
		add(LevelError, "ttl-above-ca", "jwt_ttl %s is longer than ca.ttl %s: tokens would outlive the key that signed them", e.JWTTTL, o.CATTL)
	}
	return out
}

// weakness says whether workloads other than the intended one could
// satisfy every selector of an entry.
func weakness(sels []attestor.Selector) (level, check, why string) {
	has := func(typ string, keys ...string) bool {
		return slices.ContainsFunc(sels, func(s attestor.Selector) bool { return s.Type == typ && slices.Contains(keys, s.Key()) })
	}
	hasType := func(typ string) bool {
		return slices.ContainsFunc(sels, func(s attestor.Selector) bool { return s.Type == typ })
	}
	only := func(typ string, keys ...string) bool {
		return !slices.ContainsFunc(sels, func(s attestor.Selector) bool { return s.Type != typ || !slices.Contains(keys, s.Key()) })
	}
	switch {
	case has("unix", "uid", "user"), has("k8s", "pod-uid"), has("k8s", "sa") && has("k8s", "ns"):
		return "", "", "" // pinned to a user, a service account or one pod
	case only("docker", "label", "env"):
		return LevelError, "settable-by-anyone", "only docker labels and env, which whoever starts a container chooses: any container on the node can claim this identity; add unix:uid or docker:image_config_digest"
	case only("k8s", "pod-label", "pod-name", "container-name", "container-image", "node-name"):
		return LevelError, "settable-by-anyone", "only pod labels, names or images, which any pod in any namespace can have; add k8s:ns and k8s:sa"
	case has("unix", "path", "sha256") && !hasType("docker") && !hasType("k8s"):
		return LevelError, "path-without-uid", "unix:path or unix:sha256 without unix:uid: any local user who runs that executable gets this identity; add unix:uid"
	case only("unix", "gid", "group", "supplementary_gid"):
		return LevelWarning, "group-only", "only group ids: every process of every member of the group gets this identity; add unix:uid"
	default:
		return LevelWarning, "no-principal", "no selector pins a user (unix:uid) or a service account (k8s:ns with k8s:sa): check who else can satisfy " + strings.Join(selectorList(sels), ", ")
	}
}

func selectorTypes(sels []attestor.Selector) []string {
	var types []string
	for _, s := range sels {
		if !slices.Contains(types, s.Type) {
			types = append(types, s.Type)
		}
	}
	return types
}

// lintPairs looks at every two entries: one workload that satisfies both
// gets both identities, which is rarely what was meant.
func lintPairs(entries []Entry) []Finding {
	var out []Finding
	for i, a := range entries {
		for _, b := range entries[i+1:] {
			sameID := a.SPIFFEID == b.SPIFFEID
			if sameID {
				out = append(out, Finding{Source: b.Source, Level: LevelWarning, Check: "duplicate-id",
					Message: fmt.Sprintf("%s is also given at %s with other selectors: two doors to one identity, each to be guarded", b.SPIFFEID, a.Source)})
			}
			aInB, bInA := subset(a.Selectors, b.Selectors), subset(b.Selectors, a.Selectors)
			// Entries that share no selector are about different facts
			// (a uid here, a pod there): not worth a word unless one is
			// inside the other.
			if sameID || !aInB && !bInA && (!shareAny(a.Selectors, b.Selectors) || !compatible(a.Selectors, b.Selectors)) {
				continue
			}
			var msg, check string
			switch {
			case aInB && bInA:
				check, msg = "same-selectors", fmt.Sprintf("%s has the same selectors as %s at %s: every caller gets both", b.SPIFFEID, a.SPIFFEID, a.Source)
			case aInB:
				check, msg = "subset", fmt.Sprintf("every caller of %s also matches %s at %s (its selectors are a subset) and gets both identities", b.SPIFFEID, a.SPIFFEID, a.Source)
			case bInA:
				check, msg = "subset", fmt.Sprintf("every caller of %s at %s also matches %s (its selectors are a subset) and gets both identities", a.SPIFFEID, a.Source, b.SPIFFEID)
			default:
				check, msg = "overlap", fmt.Sprintf("one workload can satisfy both %s and %s at %s; it would get both identities", b.SPIFFEID, a.SPIFFEID, a.Source)
			}
			out = append(out, Finding{Source: b.Source, Level: LevelWarning, Check: check, Message: msg})
		}
	}
	return out
}

// compatible reports whether one process could hold every selector of
// both sets: no two of them give different values to one exclusive key.
func compatible(a, b []attestor.Selector) bool {
	values := map[string]string{}
	for _, s := range slices.Concat(a, b) {
		g, ok := s.Exclusive()
		if !ok {
			continue
		}
		if v, seen := values[g]; seen && v != s.Value {
			return false
		}
		values[g] = s.Value
	}
	return true
}

func shareAny(a, b []attestor.Selector) bool {
	return slices.ContainsFunc(a, func(s attestor.Selector) bool { return slices.Contains(b, s) })
}

func subset(a, b []attestor.Selector) bool {
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}

func flatten(errs []error) []error {
	var out []error
	for _, err := range errs {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			out = append(out, flatten(j.Unwrap())...)
			continue
		}
		out = append(out, err)
	}
	return out
}

var sourcePrefix = regexp.MustCompile(`^(.*?:\d+): (.*)$`)

// splitSource splits "entries.yaml:12: message" into its two parts.
func splitSource(msg string) (source, rest string) {
	if m := sourcePrefix.FindStringSubmatch(msg); m != nil {
		return m[1], m[2]
	}
	return "", msg
}

func lineOf(source string) int {
	i := strings.LastIndexByte(source, ':')
	n, _ := strconv.Atoi(source[i+1:])
	return n
}

// Errors counts the error-level findings.
func Errors(fs []Finding) int {
	n := 0
	for _, f := range fs {
		if f.Level == LevelError {
			n++
		}
	}
	return n
}
