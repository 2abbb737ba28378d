package authz

import (
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
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
// could not be built never gets an answer from the cache.

// volatileHeaders differ on every request (trace and request ids).
var volatileHeaders = []string{
	"x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid",
	"x-b3-parentspanid", "x-b3-sampled", "b3", "x-amzn-trace-id", "x-cloud-trace-context",
}

const maxVolatileHeaders = 10 // len(volatileHeaders)

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

// appendRequestKey appends req's request key to buf. ok is false when the
// request has none: a left-out field that would make its input fail.
//
// The fields are taken out of req for the encoding and put back before it
// returns: req is this Check's own (gRPC decoded it for this call) and
// nothing else reads it meanwhile.
func appendRequestKey(buf []byte, req *authv3.CheckRequest, v volatile) (_ []byte, ok bool) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if httpReq == nil {
		return buf, false
	}
	var (
		id      string
		t       *timestamppb.Timestamp
		headers [maxVolatileHeaders]string
		had     [maxVolatileHeaders]bool
	)
	if v.id {
		if !utf8.ValidString(httpReq.Id) {
			return buf, false
		}
		id, httpReq.Id = httpReq.Id, ""
		defer func() { httpReq.Id = id }()
	}
	if v.time {
		r := req.Attributes.Request
		if r.Time != nil && r.Time.CheckValid() != nil {
			return buf, false
		}
		t, r.Time = r.Time, nil
		defer func() { r.Time = t }()
	}
	for i, name := range v.headers {
		value, present := httpReq.Headers[name]
		if !present {
			continue
		}
		if !utf8.ValidString(value) {
			for j := range i {
				if had[j] {
					httpReq.Headers[v.headers[j]] = headers[j]
				}
			}
			return buf, false
		}
		headers[i], had[i] = value, true
		delete(httpReq.Headers, name)
	}
	defer func() {
		for i, name := range v.headers {
			if had[i] {
				httpReq.Headers[name] = headers[i]
			}
		}
	}()
	out, err := deterministic.MarshalAppend(append(buf, tagRequest), req)
	if err != nil {
		return buf, false
	}
	return out, true
}

// tagRequest starts a request key; input keys start with a value's tag, so
// the two never meet in the one cache.
const tagRequest = 'R'
