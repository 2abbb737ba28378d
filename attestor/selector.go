// Package attestor owns the kernel's view of who is calling: it reads the
// peer's credentials off the Unix socket, holds on to the calling process
// so that a reused pid cannot stand in for it, and turns the process into
// selectors (unix:uid:1001, docker:label:app:web, k8s:sa:frontend, ...).
// It never decides what identity a caller gets; the identity package
// matches selectors against entries.
package attestor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Selector is one attested fact about a workload, in SPIRE's form
// "type:value", e.g. Type "unix", Value "uid:1001".
type Selector struct {
	Type  string
	Value string
}

func (s Selector) String() string { return s.Type + ":" + s.Value }

// Key returns the selector's key: "uid" for unix:uid:1001.
func (s Selector) Key() string {
	k, _, _ := strings.Cut(s.Value, ":")
	return k
}

// kind describes one selector key.
type kind struct {
	check func(string) error
	// multi is true when one process can hold several values of the key
	// (several supplementary gids). For keyed values (docker:label:K:V)
	// it holds per K instead.
	multi, keyed bool
}

// selectorKinds lists, per selector type, the keys this build can attest.
// A key is here only once a plugin produces it: an entry using any other
// would silently never match, so it is rejected instead.
var selectorKinds = map[string]map[string]kind{
	"unix": {
		"uid":               {check: isUint},
		"gid":               {check: isUint},
		"user":              {check: isName},
		"group":             {check: isName},
		"supplementary_gid": {check: isUint, multi: true},
		"path":              {check: isAbsPath},
		"sha256":            {check: isSHA256},
	},
	"docker": {
		"label":               {check: isKeyValue(":"), keyed: true},
		"env":                 {check: isKeyValue("="), keyed: true},
		"image_id":            {check: isName},
		"image_config_digest": {check: isDigest},
	},
	"k8s": {
		"ns":              {check: isName},
		"sa":              {check: isName},
		"pod-name":        {check: isName},
		"pod-uid":         {check: isPodUID},
		"pod-label":       {check: isKeyValue(":"), keyed: true},
		"container-name":  {check: isName},
		"container-image": {check: isName},
		"node-name":       {check: isName},
	},
}

// ParseSelector parses and validates "type:key:value".
func ParseSelector(s string) (Selector, error) {
	typ, value, ok := strings.Cut(s, ":")
	if !ok || typ == "" {
		return Selector{}, fmt.Errorf("selector %q: want type:key:value, e.g. unix:uid:1001", s)
	}
	keys, ok := selectorKinds[typ]
	if !ok {
		return Selector{}, fmt.Errorf("selector %q: unknown type %q (supported: %s)", s, typ, strings.Join(sortedNames(selectorKinds), ", "))
	}
	key, arg, ok := strings.Cut(value, ":")
	k, known := keys[key]
	if !known {
		return Selector{}, fmt.Errorf("selector %q: unknown %s key %q (supported: %s)", s, typ, key, strings.Join(sortedNames(keys), ", "))
	}
	if !ok || arg == "" {
		return Selector{}, fmt.Errorf("selector %q has no value", s)
	}
	if err := k.check(arg); err != nil {
		return Selector{}, fmt.Errorf("selector %q: %w", s, err)
	}
	return Selector{Type: typ, Value: value}, nil
}

// Exclusive returns a group such that one process holds at most one value
// in it: "unix:uid" for unix:uid:1001, "docker:label:app" for
// docker:label:app:web. ok is false for keys a process can hold many
// values of (unix:supplementary_gid). Two selectors of one group with
// different values can never both match the same process.
func (s Selector) Exclusive() (group string, ok bool) {
	key, arg, _ := strings.Cut(s.Value, ":")
	k := selectorKinds[s.Type][key]
	switch {
	case k.multi:
		return "", false
	case k.keyed:
		sep := ":"
		if key == "env" {
			sep = "="
		}
		name, _, _ := strings.Cut(arg, sep)
		return s.Type + ":" + key + ":" + name, true
	default:
		return s.Type + ":" + key, true
	}
}

// ParseGroup checks a group as Exclusive names it: "k8s:ns",
// "unix:uid", "docker:label:NAME" (a keyed kind needs its name). It is an
// error for a key a process can hold several values of, which names no
// single value.
func ParseGroup(g string) error {
	typ, rest, _ := strings.Cut(g, ":")
	keys, ok := selectorKinds[typ]
	if !ok {
		return fmt.Errorf("%q: unknown selector type %q (supported: %s)", g, typ, strings.Join(sortedNames(selectorKinds), ", "))
	}
	key, name, named := strings.Cut(rest, ":")
	k, known := keys[key]
	switch {
	case !known:
		return fmt.Errorf("%q: unknown %s key %q (supported: %s)", g, typ, key, strings.Join(sortedNames(keys), ", "))
	case k.multi:
		return fmt.Errorf("%q: a process can hold several %s:%s values, so it names no single one", g, typ, key)
	case k.keyed && (!named || name == ""):
		return fmt.Errorf("%q: say which %s, e.g. %s:%s:app", g, key, typ, key)
	case k.keyed && strings.ContainsAny(name, ":="):
		return fmt.Errorf("%q: a %s name holds no ':' or '='", g, key)
	case !k.keyed && named:
		return fmt.Errorf("%q: %s:%s takes no name", g, typ, key)
	}
	return nil
}

// GroupValue is what s says within its group (see Exclusive): "web" for
// docker:label:app:web, "1001" for unix:uid:1001.
func (s Selector) GroupValue() string {
	key, arg, _ := strings.Cut(s.Value, ":")
	if !selectorKinds[s.Type][key].keyed {
		return arg
	}
	sep := ":"
	if key == "env" {
		sep = "="
	}
	_, v, _ := strings.Cut(arg, sep)
	return v
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

func isUint(v string) error {
	if _, err := strconv.ParseUint(v, 10, 32); err != nil {
		return fmt.Errorf("%q is not a numeric id", v)
	}
	return nil
}

func isAbsPath(v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("%q is not an absolute path", v)
	}
	return nil
}

// isName accepts any non-blank value without control characters.
func isName(v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("%q is blank", v)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%q holds control characters", v)
	}
	return nil
}

func isSHA256(v string) error {
	if len(v) != 64 || strings.ContainsFunc(v, func(r rune) bool { return r > 0x7f || !isHex(byte(r)) }) {
		return fmt.Errorf("%q is not 64 lowercase hex digits", v)
	}
	return nil
}

func isDigest(v string) error {
	hex, ok := strings.CutPrefix(v, "sha256:")
	if !ok || isSHA256(hex) != nil {
		return fmt.Errorf("%q is not sha256:<64 lowercase hex digits>", v)
	}
	return nil
}

func isPodUID(v string) error {
	if !isUUID(v) {
		return fmt.Errorf("%q is not a pod UID (8-4-4-4-12 lowercase hex)", v)
	}
	return nil
}

// isKeyValue accepts "K<sep>V" with a non-empty K; V may be empty.
func isKeyValue(sep string) func(string) error {
	return func(v string) error {
		k, _, ok := strings.Cut(v, sep)
		if !ok || k == "" {
			return fmt.Errorf("%q: want KEY%sVALUE", v, sep)
		}
		return isName(v)
	}
}
