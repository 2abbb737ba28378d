package identity

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/attestor"
)

// Template is a SPIFFE ID some of whose path is filled from the caller's
// selectors: spiffe://example.org/ns/{k8s:ns}/sa/{k8s:sa}. A placeholder
// names an exclusive selector group (attestor.Selector.Exclusive), of
// which a process holds at most one value, and that value must be one
// whole path segment by itself: no "/", no "." or "..", nothing outside
// the SPIFFE path characters. So a workload that chooses the value (a
// container's labels are whoever starts it's to choose) moves only within
// the one segment the operator gave it, never into another part of the
// trust domain's tree, and never into another trust domain: that part is
// literal.
type Template struct {
	raw   string
	parts []templatePart
	// groups are the placeholders' groups, in order, once each.
	groups []string
	// pattern matches every ID the template can produce.
	pattern *regexp.Regexp
}

// templatePart is a literal piece of the ID or a placeholder.
type templatePart struct {
	literal string
	group   string // set for a placeholder
}

// notSegment lists groups whose values always hold "/" or ":", so a
// placeholder for them could never fill a path segment.
var notSegment = map[string]string{
	"unix:path":                  "an executable's path holds '/'",
	"docker:image_config_digest": "a digest holds ':'",
}

// ParseTemplate parses a template of an ID in td.
func ParseTemplate(s string, td spiffeid.TrustDomain) (*Template, error) {
	const scheme = "spiffe://"
	rest, ok := strings.CutPrefix(s, scheme)
	if !ok {
		return nil, errors.New("want spiffe://TRUST_DOMAIN/PATH")
	}
	host, path, _ := strings.Cut(rest, "/")
	switch {
	case strings.ContainsAny(host, "{}"):
		return nil, errors.New("the trust domain may not hold a placeholder: only the path is filled")
	case host != td.Name():
		return nil, fmt.Errorf("trust domain %q is not this node's %q", host, td.Name())
	}
	t := &Template{raw: s}
	lit := scheme + host + "/"
	base := len(lit) // offsets in messages count from the start of s
	var pattern strings.Builder
	pattern.WriteString("^" + regexp.QuoteMeta(lit))
	for i := 0; i < len(path); {
		open := strings.IndexByte(path[i:], '{')
		if open < 0 {
			open = len(path) - i
		}
		if close := strings.IndexByte(path[i:i+open], '}'); close >= 0 {
			return nil, fmt.Errorf("'}' at offset %d closes no placeholder", base+i+close)
		}
		t.parts = appendLiteral(t.parts, lit+path[i:i+open])
		pattern.WriteString(regexp.QuoteMeta(path[i : i+open]))
		lit = ""
		i += open
		if i == len(path) {
			break
		}
		end := strings.IndexByte(path[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("'{' at offset %d is not closed with '}'", base+i)
		}
		group := path[i+1 : i+end]
		if err := checkPlaceholder(group); err != nil {
			return nil, fmt.Errorf("placeholder {%s}: %w", group, err)
		}
		t.parts = append(t.parts, templatePart{group: group})
		if !slices.Contains(t.groups, group) {
			t.groups = append(t.groups, group)
		}
		pattern.WriteString(segmentChars + "+")
		i += end + 1
	}
	if len(t.groups) == 0 {
		return nil, errors.New("no placeholder: use spiffe_id for a fixed ID")
	}
	pattern.WriteString("$")
	t.pattern = regexp.MustCompile(pattern.String())
	// Every placeholder filled with a valid segment must give a valid ID
	// with a path: what is left to check is the literal part.
	sample, err := t.fill(func(string) (string, bool) { return "x", true })
	if err != nil {
		return nil, err
	}
	if _, err := spiffeid.FromString(sample); err != nil {
		return nil, fmt.Errorf("not a SPIFFE ID once filled (e.g. %s): %w", sample, err)
	}
	return t, nil
}

func appendLiteral(parts []templatePart, s string) []templatePart {
	if s == "" {
		return parts
	}
	return append(parts, templatePart{literal: s})
}

// segmentChars are the characters of a SPIFFE ID path segment.
const segmentChars = `[A-Za-z0-9._-]`

var segment = regexp.MustCompile("^" + segmentChars + "+$")

func checkPlaceholder(group string) error {
	if group == "" {
		return errors.New("empty: want a selector group such as k8s:ns or docker:label:NAME")
	}
	if err := attestor.ParseGroup(group); err != nil {
		return err
	}
	if why, ok := notSegment[group]; ok {
		return fmt.Errorf("can never fill a path segment: %s", why)
	}
	return nil
}

// String is the template as written.
func (t *Template) String() string { return t.raw }

// Groups are the selector groups the template's placeholders name.
func (t *Template) Groups() []string { return t.groups }

// CanProduce reports whether some caller could be given id by the template.
func (t *Template) CanProduce(id spiffeid.ID) bool { return t.pattern.MatchString(id.String()) }

// Fill returns the ID for a caller with sels, or says which placeholder
// it has no value for (Entry.Matches tells that apart first) or why its
// value cannot be part of an ID.
func (t *Template) Fill(sels []attestor.Selector) (spiffeid.ID, error) {
	var bad error
	s, err := t.fill(func(group string) (string, bool) {
		v, ok := valueIn(sels, group)
		if !ok {
			return "", false
		}
		if why := segmentProblem(v); why != "" && bad == nil {
			bad = fmt.Errorf("{%s} is %q, which %s: a placeholder fills exactly one path segment", group, v, why)
		}
		return v, true
	})
	switch {
	case err != nil:
		return spiffeid.ID{}, err
	case bad != nil:
		return spiffeid.ID{}, bad
	}
	id, err := spiffeid.FromString(s)
	if err != nil { // unreachable after segmentProblem, but never trusted
		return spiffeid.ID{}, fmt.Errorf("%q: %w", s, err)
	}
	return id, nil
}

func (t *Template) fill(value func(group string) (string, bool)) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.group == "" {
			b.WriteString(p.literal)
			continue
		}
		v, ok := value(p.group)
		if !ok {
			return "", fmt.Errorf("the caller has no value for {%s}", p.group)
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// valueIn returns the one value sels hold in group. Two different values
// (which no attestor produces for an exclusive group) count as none.
func valueIn(sels []attestor.Selector, group string) (string, bool) {
	var v string
	found := false
	for _, s := range sels {
		if g, ok := s.Exclusive(); ok && g == group {
			if found && s.GroupValue() != v {
				return "", false
			}
			v, found = s.GroupValue(), true
		}
	}
	return v, found
}

// segmentProblem says why v cannot be a path segment on its own, or "".
func segmentProblem(v string) string {
	switch {
	case v == "":
		return "is empty"
	case v == "." || v == "..":
		return "would name a relative path"
	case !segment.MatchString(v):
		return "holds characters outside A-Z a-z 0-9 . - _"
	}
	return ""
}
