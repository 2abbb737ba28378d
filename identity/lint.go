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
		out = append(out, Finding{Source: e.Source, Level: level, Check: check, Message: e.Name() + ": " + fmt.Sprintf(format, args...)})
	}
	// A placeholder needs its selector as much as a selector does, with
	// any value: it counts for what pins the caller and what is attested.
	sels := slices.Concat(e.Selectors, placeholderSelectors(e))
	if level, check, why := weakness(sels); level != "" {
		add(level, check, "%s", why)
	}
	if e.Template != nil {
		for _, g := range e.Template.Groups() {
			if who, ok := chosenBy(g); ok {
				add(LevelWarning, "workload-chosen-segment", "{%s} is chosen by %s: any caller the selectors admit picks its own ID among all those the template makes, so the selectors must admit only workloads trusted with every one of them", g, who)
			}
		}
	}
	for _, typ := range selectorTypes(sels) {
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

// placeholderSelectors stands for each placeholder of a template entry
// with a selector of its type and key (docker:label:NAME for
// {docker:label:NAME}); only their types and keys are meaningful.
func placeholderSelectors(e Entry) []attestor.Selector {
	if e.Template == nil {
		return nil
	}
	var out []attestor.Selector
	for _, g := range e.Template.Groups() {
		typ, rest, _ := strings.Cut(g, ":")
		out = append(out, attestor.Selector{Type: typ, Value: rest})
	}
	return out
}

// chosenBy says who sets the values of a group other than the kernel or
// an API server's access control: a placeholder for it lets that party
// choose the segment.
func chosenBy(group string) (string, bool) {
	typ, rest, _ := strings.Cut(group, ":")
	key, _, _ := strings.Cut(rest, ":")
	switch typ + ":" + key {
	case "docker:label", "docker:env", "docker:image_id":
		return "whoever starts the container", true
	case "k8s:pod-label", "k8s:pod-name", "k8s:container-name", "k8s:container-image":
		return "whoever may create pods in the namespace", true
	}
	return "", false
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
			sameID := a.Name() == b.Name()
			switch {
			case sameID:
				out = append(out, Finding{Source: b.Source, Level: LevelWarning, Check: "duplicate-id",
					Message: fmt.Sprintf("%s is also given at %s with other selectors: two doors to one identity, each to be guarded", b.Name(), a.Source)})
			case produces(a, b):
				out = append(out, Finding{Source: b.Source, Level: LevelWarning, Check: "duplicate-id",
					Message: fmt.Sprintf("%s can also come from the template %s at %s: two doors to one identity, each to be guarded", b.Name(), a.Name(), a.Source)})
			case produces(b, a):
				out = append(out, Finding{Source: b.Source, Level: LevelWarning, Check: "duplicate-id",
					Message: fmt.Sprintf("the template %s can make %s, given at %s: two doors to one identity, each to be guarded", b.Name(), a.Name(), a.Source)})
			}
			aInB, bInA := covers(a, b), covers(b, a)
			// Entries that share no selector are about different facts
			// (a uid here, a pod there): not worth a word unless one is
			// inside the other.
			if sameID || !aInB && !bInA && (!shareAny(a, b) || !compatible(a.Selectors, b.Selectors)) {
				continue
			}
			var msg, check string
			switch {
			case aInB && bInA:
				check, msg = "same-selectors", fmt.Sprintf("%s has the same selectors as %s at %s: every caller gets both", b.Name(), a.Name(), a.Source)
			case aInB:
				check, msg = "subset", fmt.Sprintf("every caller of %s also matches %s at %s (its selectors are a subset) and gets both identities", b.Name(), a.Name(), a.Source)
			case bInA:
				check, msg = "subset", fmt.Sprintf("every caller of %s at %s also matches %s (its selectors are a subset) and gets both identities", a.Name(), a.Source, b.Name())
			default:
				check, msg = "overlap", fmt.Sprintf("one workload can satisfy both %s and %s at %s; it would get both identities", b.Name(), a.Name(), a.Source)
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

// produces reports whether a is a template entry that can make b's fixed ID.
func produces(a, b Entry) bool {
	return a.Template != nil && b.Template == nil && a.Template.CanProduce(b.SPIFFEID)
}

// shareAny reports whether a and b ask for one same fact: a selector, or
// a value in a placeholder's group.
func shareAny(a, b Entry) bool {
	return slices.ContainsFunc(a.Selectors, func(s attestor.Selector) bool { return slices.Contains(b.Selectors, s) }) ||
		slices.ContainsFunc(groups(a), func(g string) bool { return holds(b, g) }) ||
		slices.ContainsFunc(groups(b), func(g string) bool { return holds(a, g) })
}

// covers reports whether every caller of b also satisfies a: b asks for
// each selector of a, and for a value in each group a's placeholders name.
func covers(a, b Entry) bool {
	for _, s := range a.Selectors {
		if !slices.Contains(b.Selectors, s) {
			return false
		}
	}
	for _, g := range groups(a) {
		if !holds(b, g) {
			return false
		}
	}
	return true
}

func groups(e Entry) []string {
	if e.Template == nil {
		return nil
	}
	return e.Template.Groups()
}

// holds reports whether every caller of e has a value in group g.
func holds(e Entry, g string) bool {
	return slices.Contains(groups(e), g) || slices.ContainsFunc(e.Selectors, func(s attestor.Selector) bool {
		sg, ok := s.Exclusive()
		return ok && sg == g
	})
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
