// Package bodyterm turns the body of a request, as Envoy sends it with
// with_request_body, into parsed_body and truncated_body the way
// OPA-Envoy fills them: JSON (through jsonterm), form-urlencoded,
// multipart/form-data, and gRPC messages decoded with the descriptor sets
// of their services (written by prototerm). A body's sender chooses its
// size and shape, so every body is parsed within Limits and stops when
// its deadline passes or its request's context ends.
//
// It owns choosing a parser by content type, telling a body Envoy cut
// short, forms, multipart parts, gRPC framing and the descriptor sets. It
// never chooses the limits (package input does, from its options) and
// never looks at a request beyond its body, path and headers.
package bodyterm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
)

// Limits bound the work one body may make meshid do; input.BodyLimits
// says what each means. None may be zero.
type Limits struct {
	MaxBytes, MaxDepth, MaxValues int
}

// ErrDeadline is the deadline given to Parse passing while the body was
// being parsed; Parse's error wraps it.
var ErrDeadline = errors.New("deadline passed")

var nullTerm = ast.NullTerm()

// Parser parses request bodies within its limits. It is safe for
// concurrent use.
type Parser struct {
	Limits Limits
	// Protos describe the gRPC services whose bodies are decoded; nil
	// leaves gRPC bodies null.
	Protos *Descriptors
	// Clock tells when Parse's deadline has passed.
	Clock func() time.Time
}

// stopper is the stop condition a body's budget polls: ctx ended, or the
// clock past deadline (the zero time never is). It is made only for a
// body that is parsed: a closure costs an allocation, which the requests
// without a body should not pay.
func (p *Parser) stopper(ctx context.Context, deadline time.Time) func() error {
	clock := p.Clock
	return func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !deadline.IsZero() && clock().After(deadline) {
			return ErrDeadline
		}
		return nil
	}
}

// Parse is parsed_body and truncated_body, as OPA-Envoy fills them when
// Envoy sends the body (with_request_body): JSON, form-urlencoded or
// multipart/form-data by content-type, from body or else raw_body, and
// gRPC when Protos describe its services; null for any other type, an
// empty body, or one over MaxBytes (then skipped is its size). A body
// Envoy cut short (it says so with x-envoy-auth-partial-body, first of
// all, or content-length is longer than what arrived) is reported
// truncated and never parsed: half a document could read as a different
// one. A body that claims a type it does not have, or is beyond the
// limits' depth or values, is an error, hence a deny; so is ctx ending or
// the clock passing deadline while it is parsed (an error wrapping
// ErrDeadline).
func (p *Parser) Parse(ctx context.Context, httpReq *authv3.AttributeContext_HttpRequest, deadline time.Time) (parsed *ast.Term, truncated bool, skipped int, err error) {
	headers := httpReq.GetHeaders()
	// Envoy's own word, whatever the type and even with nothing sent, as
	// the plugin takes it.
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nullTerm, true, 0, nil
	}
	size := len(httpReq.GetBody())
	if size == 0 {
		size = len(httpReq.GetRawBody())
	}
	if size == 0 {
		return nullTerm, false, 0, nil
	}
	contentType := headers["content-type"]
	kind := bodyKind(contentType)
	if kind == "" || kind == "grpc" && p.Protos == nil {
		return nullTerm, false, 0, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, 0, fmt.Errorf("content-length %s: %w", QuoteShort(cl), err)
		}
		if n > int64(size) {
			return nullTerm, true, 0, nil
		}
	}
	if kind != "grpc" && size > p.Limits.MaxBytes {
		return nullTerm, false, size, nil
	}
	// The stop condition may hold already: the attributes took long.
	stop := p.stopper(ctx, deadline)
	if err := stop(); err != nil {
		return nil, false, 0, err
	}
	budget := jsonterm.NewBudget(p.Limits.MaxDepth, p.Limits.MaxValues, stop)
	if kind == "grpc" {
		// The same bytes as body, without copying raw_body (pack_as_bytes,
		// which binary messages need) again.
		msg := httpReq.GetRawBody()
		if httpReq.GetBody() != "" {
			msg = []byte(httpReq.GetBody())
		}
		parsed, truncated, err := p.Protos.parsedBody(httpReq.GetPath(), headers, msg, p.Limits.MaxBytes, budget)
		if errors.Is(err, errSkipped) {
			return nullTerm, false, size, nil
		}
		return parsed, truncated, 0, limitHint(err)
	}
	text := httpReq.GetBody()
	if text == "" {
		text = string(httpReq.GetRawBody())
	}
	var t *ast.Term
	switch kind {
	case "json":
		if t, err = jsonterm.Parse(text, budget); err != nil && !BeyondLimits(err) {
			err = fmt.Errorf("content-type is JSON but the body is not: %w", err)
		}
	case "form":
		if t, err = formTerm(text, budget); err != nil && !BeyondLimits(err) {
			err = fmt.Errorf("content-type is form-urlencoded but the body is not: %w", err)
		}
	default:
		if t, err = multipartTerm(contentType, text, budget); err != nil && !BeyondLimits(err) {
			err = fmt.Errorf("content-type is multipart/form-data but the body is not: %w", err)
		}
	}
	if err != nil {
		return nil, false, 0, limitHint(err)
	}
	return t, false, 0, nil
}

// BeyondLimits is an error that is not about the body's syntax: a limit
// or the stop condition.
func BeyondLimits(err error) bool {
	return errors.Is(err, jsonterm.ErrTooDeep) || errors.Is(err, jsonterm.ErrTooMany) || errors.Is(err, ErrDeadline) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// limitHint names the setting a limit error is about, for the operator
// who reads it in the log.
func limitHint(err error) error {
	switch {
	case errors.Is(err, jsonterm.ErrTooDeep):
		return fmt.Errorf("%w (limit: max_body_depth)", err)
	case errors.Is(err, jsonterm.ErrTooMany):
		return fmt.Errorf("%w (limit: max_body_values)", err)
	}
	return err
}

// bodyKind matches content types the way OPA-Envoy does: by substring, so
// parameters ("; charset=utf-8") do not matter, in its order.
func bodyKind(contentType string) string {
	switch {
	case strings.Contains(contentType, "application/json"):
		return "json"
	case strings.Contains(contentType, "application/grpc"):
		return "grpc"
	case strings.Contains(contentType, "application/x-www-form-urlencoded"):
		return "form"
	case strings.Contains(contentType, "multipart/form-data"):
		return "multipart"
	}
	return ""
}

// QuoteShort quotes s for an error message, cut to a length a log line
// can carry: the request's sender chooses s. Package input quotes with it
// too, so that every error about a request reads alike.
func QuoteShort(s string) string {
	const max = 128
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + fmt.Sprintf("... (%d bytes)", len(s))
}
