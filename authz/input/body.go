package input

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"strconv"
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// Limits on what a multipart body may make meshid build. Envoy already
// bounds the body it sends (with_request_body.max_request_bytes); these
// bound the work per part count, not per byte.
const maxMultipartParts = 1000

// parseBody is parseBodyWith without proto descriptors: gRPC bodies stay
// unparsed.
func parseBody(httpReq *authv3.AttributeContext_HttpRequest) (parsed *ast.Term, truncated bool, err error) {
	return parseBodyWith(httpReq, nil)
}

// parseBodyWith is parsed_body and truncated_body, as OPA-Envoy fills them
// when Envoy sends the body (with_request_body): JSON, form-urlencoded or
// multipart/form-data by content-type, from body or else raw_body, and
// gRPC when protos describe its services; null for any other type or an
// empty body. A body Envoy cut short (it says so with
// x-envoy-auth-partial-body, or content-length is longer than what
// arrived) is reported truncated and never parsed: half a document could
// read as a different one. A body that claims a type it does not have is
// an error, hence a deny.
func parseBodyWith(httpReq *authv3.AttributeContext_HttpRequest, protos *ProtoDescriptors) (parsed *ast.Term, truncated bool, err error) {
	headers := httpReq.GetHeaders()
	body := httpReq.GetBody()
	if body == "" {
		body = string(httpReq.GetRawBody())
	}
	if body == "" {
		return nullTerm, false, nil
	}
	// Envoy's own word, whatever the type (OPA-Envoy ignores it).
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nullTerm, true, nil
	}
	contentType := headers["content-type"]
	kind := bodyKind(contentType)
	if kind == "" || kind == "grpc" && protos == nil {
		return nullTerm, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("content-length %q: %w", cl, err)
		}
		if n > int64(len(body)) {
			return nullTerm, true, nil
		}
	}
	switch kind {
	case "json":
		t, err := jsonTerm(body)
		if err != nil {
			return nil, false, fmt.Errorf("content-type is JSON but the body is not: %w", err)
		}
		return t, false, nil
	case "form":
		t, err := queryTerm(body)
		if err != nil {
			return nil, false, fmt.Errorf("content-type is form-urlencoded but the body is not: %w", err)
		}
		return t, false, nil
	case "grpc":
		// The same bytes as body, without copying raw_body (pack_as_bytes,
		// which binary messages need) again.
		msg := httpReq.GetRawBody()
		if httpReq.GetBody() != "" {
			msg = []byte(body)
		}
		return protos.parsedBody(httpReq.GetPath(), headers, msg)
	default:
		t, err := multipartTerm(contentType, body)
		if err != nil {
			return nil, false, fmt.Errorf("content-type is multipart/form-data but the body is not: %w", err)
		}
		return t, false, nil
	}
}

// bodyKind matches content types the way OPA-Envoy does: by substring, so
// parameters ("; charset=utf-8") do not matter.
func bodyKind(contentType string) string {
	switch {
	case strings.Contains(contentType, "application/json"):
		return "json"
	case strings.Contains(contentType, "application/x-www-form-urlencoded"):
		return "form"
	case strings.Contains(contentType, "multipart/form-data"):
		return "multipart"
	case strings.Contains(contentType, "application/grpc"):
		return "grpc"
	}
	return ""
}

func jsonTerm(s string) (*ast.Term, error) {
	var v any
	// util.UnmarshalJSON keeps numbers as json.Number (large integers stay
	// exact) and rejects anything after the first value.
	if err := util.UnmarshalJSON([]byte(s), &v); err != nil {
		return nil, err
	}
	val, err := ast.InterfaceToValue(v)
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(val), nil
}

// multipartTerm maps each form field name to the list of its values: JSON
// for parts whose content-type is JSON, the text otherwise.
func multipartTerm(contentType, body string) (*ast.Term, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, err
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, errors.New("no boundary in content-type")
	}
	r := multipart.NewReader(strings.NewReader(body), boundary)
	fields := map[string][]*ast.Term{}
	var order []string
	for n := 0; ; n++ {
		part, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if n == maxMultipartParts {
			return nil, fmt.Errorf("more than %d parts", maxMultipartParts)
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", n+1, err)
		}
		name := part.FormName()
		if !utf8.ValidString(name) {
			return nil, fmt.Errorf("part %d name: %w", n+1, errInvalidUTF8)
		}
		var val *ast.Term
		if strings.Contains(part.Header.Get("Content-Type"), "application/json") {
			if val, err = jsonTerm(string(data)); err != nil {
				return nil, fmt.Errorf("part %q is declared JSON but is not: %w", name, err)
			}
		} else {
			// A file part may be binary: its bytes are passed on as they
			// are, as OPA-Envoy does.
			val = ast.StringTerm(string(data))
		}
		if _, ok := fields[name]; !ok {
			order = append(order, name)
		}
		fields[name] = append(fields[name], val)
	}
	pairs := make([][2]*ast.Term, 0, len(order))
	for _, name := range order {
		pairs = append(pairs, ast.Item(ast.StringTerm(name), ast.ArrayTerm(fields[name]...)))
	}
	return ast.ObjectTerm(pairs...), nil
}
