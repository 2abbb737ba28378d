// Package attestor owns the kernel's view of who is calling: it reads the
// peer's credentials off the Unix socket and turns a process into selectors
// (unix:uid:1001, ...). It never decides what identity a caller gets; the
// identity package matches selectors against entries.
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

// selectorKinds lists, per selector type, the keys this build can attest.
// Docker and Kubernetes keys join when their attestors do; until then an
// entry using them would silently never match, so it is rejected instead.
var selectorKinds = map[string]map[string]func(string) error{
	"unix": {
		"uid":  isUint,
		"gid":  isUint,
		"path": isAbsPath,
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
		return Selector{}, fmt.Errorf("selector %q: unknown type %q (supported: unix)", s, typ)
	}
	key, arg, ok := strings.Cut(value, ":")
	check, known := keys[key]
	if !known {
		return Selector{}, fmt.Errorf("selector %q: unknown %s key %q (supported: %s)", s, typ, key, supported(keys))
	}
	if !ok || arg == "" {
		return Selector{}, fmt.Errorf("selector %q has no value", s)
	}
	if err := check(arg); err != nil {
		return Selector{}, fmt.Errorf("selector %q: %v", s, err)
	}
	return Selector{Type: typ, Value: value}, nil
}

func supported(keys map[string]func(string) error) string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
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
