package input

import (
	"errors"
	"fmt"
	"strings"
)

// xfccTrust says when input.spiffe.source comes from the
// x-forwarded-client-cert header instead of the mTLS peer: a proxy in
// front (a gateway that terminated the client's mTLS) vouches for the
// client. Only a header that a trusted proxy wrote may be believed, so
// either the header reaches meshid only through Envoys that sanitise it
// (proxies empty) or the mTLS peer must be one of proxies.
type xfccTrust struct {
	proxies map[string]bool // SPIFFE IDs; empty: any request's header
}

// source returns the caller's ID from header when it is to be believed,
// and whether it was: a trusted header that names no usable URI yields
// ("", true), so the caller is unidentified rather than taken to be the
// proxy that forwarded it.
func (x *xfccTrust) source(peer, header string) (string, bool) {
	if header == "" || (len(x.proxies) > 0 && !x.proxies[peer]) {
		return peer, false
	}
	elements, err := parseXFCC(header)
	if err != nil {
		return "", true
	}
	// The last element is the one the nearest proxy added about its own
	// client; earlier ones are what that client claimed.
	uris := elements[len(elements)-1]["uri"]
	if len(uris) != 1 {
		return "", true
	}
	return uris[0], true
}

// xfccElement is one certificate's worth of an XFCC header: lower-cased
// keys (by, hash, cert, chain, subject, uri, dns) to their values.
type xfccElement map[string][]string

var errXFCCEmpty = errors.New("empty element")

// parseXFCC parses Envoy's x-forwarded-client-cert header: elements
// separated by ',', key=value pairs by ';', and values that contain one of
// ",;=" double-quoted with '"' and '\' escaped by '\'.
func parseXFCC(h string) ([]xfccElement, error) {
	var elements []xfccElement
	el := xfccElement{}
	i := 0
	for {
		// key
		eq := strings.IndexByte(h[i:], '=')
		if eq < 0 {
			return nil, fmt.Errorf("x-forwarded-client-cert: %q: want key=value", h[i:])
		}
		key := strings.ToLower(strings.TrimSpace(h[i : i+eq]))
		if key == "" || strings.ContainsAny(key, ",;\"") {
			return nil, fmt.Errorf("x-forwarded-client-cert: bad key %q", h[i:i+eq])
		}
		i += eq + 1
		// value
		var val string
		if i < len(h) && h[i] == '"' {
			var b strings.Builder
			j := i + 1
			for ; j < len(h) && h[j] != '"'; j++ {
				if h[j] == '\\' {
					j++
					if j == len(h) {
						break
					}
				}
				b.WriteByte(h[j])
			}
			if j >= len(h) {
				return nil, fmt.Errorf("x-forwarded-client-cert: unterminated quoted value of %s", key)
			}
			val, i = b.String(), j+1
			if i < len(h) && h[i] != ';' && h[i] != ',' {
				return nil, fmt.Errorf("x-forwarded-client-cert: text after the quoted value of %s", key)
			}
		} else {
			end := strings.IndexAny(h[i:], ",;")
			if end < 0 {
				end = len(h) - i
			}
			val, i = h[i:i+end], i+end
			if strings.ContainsAny(val, "\"=") {
				return nil, fmt.Errorf("x-forwarded-client-cert: unquoted value of %s contains '\"' or '='", key)
			}
		}
		el[key] = append(el[key], val)

		if i == len(h) {
			return append(elements, el), nil
		}
		if h[i] == ',' {
			elements = append(elements, el)
			el = xfccElement{}
		}
		i++
		if i == len(h) {
			return nil, fmt.Errorf("x-forwarded-client-cert: %w at the end", errXFCCEmpty)
		}
	}
}
