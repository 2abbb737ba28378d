package authz

import (
	"encoding/binary"
	"slices"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// The request key is the decision cache's second way in: the CheckRequest
// itself, without the fields that differ on every request and that the
// policy does not read. Two requests with equal request keys have equal
// input documents wherever the policy can read, so a decision cached under
// one answers the other before its input is built, which is most of the
// work left once decisions come from the cache.
//
// It holds only when the input is a function of the request alone: not
// when the policy reads input.spiffe.jwt while JWT-SVIDs are validated (a
// token expires with the clock), and the input must be built anyway for
// a decision log. Build fails on invalid UTF-8 and invalid timestamps; the
// fields left out are checked for both here, so that a request whose input
// could not be built never gets an answer from the cache (the fields in
// the key are the earlier request's, whose input was built).
//
// Unknown fields (those of a newer Envoy API than this build knows) are
// not in the key, as they are not in the input: neither encoding writes
// them, so requests differing only there decide alike. The rare messages
// encoded whole (addresses but plain socket ones, metadata, header_map)
// keep theirs, which only makes more keys.

// volatileHeaders differ on every request (trace and request ids).
var volatileHeaders = []string{
	"x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid",
	"x-b3-parentspanid", "x-b3-sampled", "b3", "x-amzn-trace-id", "x-cloud-trace-context",
}

// volatile says which of the per-request fields the request key leaves
// out: those the policy cannot read.
type volatile struct {
	id, time bool
	headers  []string
}

// volatileFor is what the request key may leave out for a policy reading
// paths (reads.paths).
func volatileFor(paths [][]string) volatile {
	reads := func(path ...string) bool {
		for _, p := range paths {
			if isPrefix(p, path) || isPrefix(path, p) {
				return true
			}
		}
		return false
	}
	v := volatile{
		id:   !reads("attributes", "request", "http", "id"),
		time: !reads("attributes", "request", "time"),
	}
	for _, h := range volatileHeaders {
		if !reads("attributes", "request", "http", "headers", h) {
			v.headers = append(v.headers, h)
		}
	}
	return v
}

// readsJWT says whether a policy reading paths can read input.spiffe.jwt.
func readsJWT(paths [][]string) bool {
	jwt := []string{"spiffe", "jwt"}
	for _, p := range paths {
		if isPrefix(p, jwt) || isPrefix(jwt, p) {
			return true
		}
	}
	return false
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// appendRequestKey appends req's request key to buf: every field of the
// request but the left-out ones, each with its field number, strings with
// their lengths, maps in key order, the messages Envoy rarely fills
// (addresses, metadata, header_map, TLS) in their deterministic protobuf
// encoding. ok is false when the request has no key: a left-out field
// that would make its input fail. TestRequestKeyCoversEveryField holds
// the fields encoded to the messages' descriptors.
func appendRequestKey(buf []byte, req *authv3.CheckRequest, v volatile) (_ []byte, ok bool) {
	a := req.GetAttributes()
	httpReq := a.GetRequest().GetHttp()
	if httpReq == nil {
		return buf, false
	}
	if v.id && !utf8.ValidString(httpReq.Id) {
		return buf, false
	}
	if t := a.Request.Time; v.time && t != nil && t.CheckValid() != nil {
		return buf, false
	}
	buf = append(buf, tagRequest)
	var err error
	for i, p := range []*authv3.AttributeContext_Peer{a.Source, a.Destination} {
		buf = append(buf, byte(i))
		if p == nil {
			buf = append(buf, 0)
			continue
		}
		buf = append(buf, 1)
		if buf, err = appendAddress(buf, p.Address); err != nil {
			return buf, false
		}
		buf = appendString(buf, tagString, p.Service)
		buf = appendStringMap(buf, p.Labels)
		buf = appendString(buf, tagString, p.Principal)
		buf = appendString(buf, tagString, p.Certificate)
	}
	if !v.time {
		if buf, err = appendMessage(buf, a.Request.Time); err != nil {
			return buf, false
		}
	}
	id := httpReq.Id
	if v.id {
		id = ""
	}
	for _, s := range []string{id, httpReq.Method, httpReq.Path, httpReq.Host, httpReq.Scheme, httpReq.Query, httpReq.Fragment, httpReq.Protocol, httpReq.Body, string(httpReq.RawBody)} {
		buf = appendString(buf, tagString, s)
	}
	buf = binary.AppendVarint(buf, httpReq.Size)
	if buf, ok = appendHeaders(buf, httpReq.Headers, v.headers); !ok {
		return buf, false
	}
	if buf, err = appendMessage(buf, httpReq.HeaderMap); err != nil {
		return buf, false
	}
	for _, m := range []*corev3.Metadata{a.MetadataContext, a.RouteMetadataContext} {
		if m != nil && len(m.FilterMetadata) == 0 && len(m.TypedFilterMetadata) == 0 {
			buf = append(buf, tagEmpty) // Envoy sends an empty one with every request
			continue
		}
		if buf, err = appendMessage(buf, m); err != nil {
			return buf, false
		}
	}
	buf = appendStringMap(buf, a.ContextExtensions)
	buf = appendString(buf, tagString, a.GetTlsSession().GetSni())
	buf = append(buf, byte(boolInt(a.TlsSession != nil)))
	return buf, true
}

// tagEmpty is an empty metadata message; tagSocket a socket address
// written field by field.
const (
	tagEmpty  = 'e'
	tagSocket = 'k'
)

// appendAddress appends a peer's address: a socket address with a port
// number (what Envoy sends for TCP peers) field by field, anything else
// as its deterministic encoding.
func appendAddress(buf []byte, a *corev3.Address) ([]byte, error) {
	sa := a.GetSocketAddress()
	port, isPort := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	if sa == nil || !isPort {
		return appendMessage(buf, a)
	}
	buf = append(buf, tagSocket, byte(boolInt(sa.Ipv4Compat)))
	buf = binary.AppendVarint(buf, int64(sa.Protocol))
	buf = appendString(buf, tagString, sa.Address)
	buf = appendString(buf, tagString, sa.ResolverName)
	buf = appendString(buf, tagString, sa.NetworkNamespaceFilepath)
	return binary.AppendUvarint(buf, uint64(port.PortValue)), nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// appendMessage appends a message's deterministic encoding with its
// length; nil and empty differ.
func appendMessage(buf []byte, m proto.Message) ([]byte, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return append(buf, tagNull), nil
	}
	buf = append(buf, tagObject)
	at := len(buf)
	buf = append(buf, 0, 0, 0, 0) // the length, once known
	out, err := deterministic.MarshalAppend(buf, m)
	if err != nil {
		return buf, err
	}
	binary.BigEndian.PutUint32(out[at:], uint32(len(out)-at-4))
	return out, nil
}

// maxSortedKeys is how many map entries are sorted on the stack; a larger
// map's are sorted on the heap.
const maxSortedKeys = 32

// appendStringMap appends a string map in key order.
func appendStringMap(buf []byte, m map[string]string) []byte {
	buf, _ = appendHeaders(buf, m, nil)
	return buf
}

// appendHeaders appends a string map in key order but the keys in skip,
// whose values must be valid UTF-8 as the input requires: ok is false when
// one is not. One pass over the map takes both keys and values.
func appendHeaders(buf []byte, m map[string]string, skip []string) (_ []byte, ok bool) {
	if len(m) == 0 { // peers' labels, context extensions: most often none
		return append(buf, tagObject, 0), true
	}
	var stack [maxSortedKeys][2]string
	entries := stack[:0]
	for k, v := range m {
		if slices.Contains(skip, k) {
			if !utf8.ValidString(v) {
				return buf, false
			}
			continue
		}
		entries = append(entries, [2]string{k, v})
	}
	slices.SortFunc(entries, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	buf = append(buf, tagObject)
	buf = binary.AppendUvarint(buf, uint64(len(entries)))
	for _, e := range entries {
		buf = appendString(buf, tagString, e[0])
		buf = appendString(buf, tagString, e[1])
	}
	return buf, true
}

// tagRequest starts a request key; input keys start with a value's tag, so
// the two never meet in the one cache.
const tagRequest = 'R'
