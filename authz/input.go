package authz

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
)

// input builds the document a policy sees as input: the OPA-Envoy plugin's
// (so its policies run unchanged) plus meshid's "spiffe".
//
// For now it goes through proto-JSON and a Go map; the Engine only depends
// on the ast.Value it returns, so building the value directly later is a
// change to this file alone.
func input(req *authv3.CheckRequest) (ast.Value, error) {
	doc, err := inputDocument(req)
	if err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(doc)
}

func inputDocument(req *authv3.CheckRequest) (map[string]any, error) {
	bs, err := protojson.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode check request: %w", err)
	}
	var doc map[string]any
	// util.UnmarshalJSON keeps numbers as json.Number, so large integers
	// in metadata survive exactly, as they do in OPA-Envoy.
	if err := util.UnmarshalJSON(bs, &doc); err != nil {
		return nil, fmt.Errorf("decode check request: %w", err)
	}
	if doc == nil {
		doc = map[string]any{}
	}

	httpReq := req.GetAttributes().GetRequest().GetHttp()
	parsedPath, parsedQuery, err := parsePath(httpReq.GetPath())
	if err != nil {
		return nil, fmt.Errorf("request path %q: %w", httpReq.GetPath(), err)
	}
	parsedBody, truncated, err := parseBody(httpReq)
	if err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}

	doc["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}
	doc["parsed_path"] = parsedPath
	doc["parsed_query"] = parsedQuery
	doc["parsed_body"] = parsedBody
	doc["truncated_body"] = truncated
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		doc["source_principal"] = p
	}
	doc["spiffe"] = spiffeDocument(req.GetAttributes())
	return doc, nil
}

// parsePath splits the request path the way OPA-Envoy does: segments of
// the unescaped path without its leading slashes ("/" is [""]), and the
// query as a map of value lists.
func parsePath(path string) ([]any, map[string]any, error) {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	unescaped, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, nil, err
	}
	var segments []any
	for s := range strings.SplitSeq(strings.TrimLeft(unescaped, "/"), "/") {
		segments = append(segments, s)
	}

	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, nil, err
	}
	query := make(map[string]any, len(values))
	for k, vs := range values {
		list := make([]any, len(vs))
		for i, v := range vs {
			list[i] = v
		}
		query[k] = list
	}
	return segments, query, nil
}

// parseBody parses a JSON request body, the only kind parsed so far;
// parsed_body is null otherwise, as OPA-Envoy leaves it for a body it does
// not parse. A body Envoy cut short is reported truncated, never parsed.
func parseBody(httpReq *authv3.AttributeContext_HttpRequest) (parsed any, truncated bool, err error) {
	headers := httpReq.GetHeaders()
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nil, true, nil
	}
	if !strings.Contains(headers["content-type"], "application/json") {
		return nil, false, nil
	}
	body := []byte(httpReq.GetBody())
	if len(body) == 0 {
		body = httpReq.GetRawBody()
	}
	if len(body) == 0 {
		return nil, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("content-length %q: %w", cl, err)
		}
		if n > int64(len(body)) {
			return nil, true, nil
		}
	}
	if err := util.UnmarshalJSON(body, &parsed); err != nil {
		return nil, false, fmt.Errorf("content-type is JSON but the body is not: %w", err)
	}
	return parsed, false, nil
}

// spiffeDocument describes the SPIFFE IDs Envoy reports for the two ends
// of the connection. A principal that is not a SPIFFE ID (absent, or a
// certificate subject) leaves its key out rather than failing the request:
// the policy decides what an unidentified caller may do.
func spiffeDocument(attrs *authv3.AttributeContext) map[string]any {
	doc := map[string]any{}
	if id, err := spiffeid.FromString(attrs.GetSource().GetPrincipal()); err == nil {
		source := idDocument(id)
		// Envoy's source.principal is the URI SAN of the client
		// certificate it verified on this connection.
		source["via"] = "mtls"
		doc["source"] = source
	}
	if id, err := spiffeid.FromString(attrs.GetDestination().GetPrincipal()); err == nil {
		doc["destination"] = idDocument(id)
	}
	return doc
}

func idDocument(id spiffeid.ID) map[string]any {
	segments := []any{}
	if p := id.Path(); p != "" {
		for s := range strings.SplitSeq(p[1:], "/") {
			segments = append(segments, s)
		}
	}
	return map[string]any{
		"id":           id.String(),
		"trust_domain": id.TrustDomain().Name(),
		"path":         id.Path(),
		"segments":     segments,
	}
}
