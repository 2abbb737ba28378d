package input

import (
	"fmt"

	"github.com/meshid/meshid/authz/input/internal/bodyterm"
)

// Defaults of BodyLimits. Envoy sends at most with_request_body's
// max_request_bytes (meshid's generated sidecars: 8 KiB; a few MiB is
// already unusual, and gRPC refuses a CheckRequest over 4 MiB), so 1 MiB
// parses every body a sidecar is configured to send while keeping a
// hostile one's cost bounded. 64 levels is deeper than any API nests;
// 10000 values is Go's own limit on query parameters and multipart
// headers, and takes a few milliseconds to build.
const (
	DefaultMaxBodyBytes  = 1 << 20
	DefaultMaxBodyDepth  = 64
	DefaultMaxBodyValues = 10000
)

// BodyLimits bound the work a request body may make meshid do: a body's
// sender chooses its size and shape, the operator chooses what that may
// cost. Zero fields take the defaults.
type BodyLimits struct {
	// MaxBytes is the largest body parsed; a longer one keeps
	// parsed_body null (as a body of a type meshid does not parse) and
	// truncated_body false (Envoy sent it whole), and stays in
	// attributes.request.http as sent, for the policy to decide on.
	MaxBytes int
	// MaxDepth is how deeply parsed_body may nest arrays and objects; a
	// form is 2 deep, a multipart part's JSON starts at 3. Deeper is an
	// error, hence a deny.
	MaxDepth int
	// MaxValues is how many values parsed_body may hold (each JSON
	// scalar, array and object, each field of a gRPC message, each
	// form pair, each multipart part). More is an error, hence a deny.
	MaxValues int
}

func (l BodyLimits) withDefaults() (BodyLimits, error) {
	if l.MaxBytes < 0 || l.MaxDepth < 0 || l.MaxValues < 0 {
		return l, fmt.Errorf("body limits %+v: must not be negative", l)
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = DefaultMaxBodyBytes
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = DefaultMaxBodyDepth
	}
	if l.MaxValues == 0 {
		l.MaxValues = DefaultMaxBodyValues
	}
	return l, nil
}

// ErrDeadline is the deadline given to Build passing while the body was
// being parsed; Build's error wraps it.
var ErrDeadline = bodyterm.ErrDeadline

// ProtoDescriptors are the gRPC services whose request messages meshid
// decodes into input.parsed_body, as OPA-Envoy does with its
// proto-descriptor setting. It is immutable once loaded and safe for
// concurrent use.
type ProtoDescriptors = bodyterm.Descriptors

// LoadProtoDescriptors reads a binary FileDescriptorSet, the file
// `protoc --include_imports --descriptor_set_out=FILE` writes (or
// `buf build -o FILE`). Every file an included file imports must be in the
// set, and the set must define at least one service: anything else is an
// error naming path and the problem, since the alternative, finding out
// when requests arrive, is a policy that silently sees null bodies.
func LoadProtoDescriptors(path string) (*ProtoDescriptors, error) {
	return bodyterm.LoadDescriptors(path)
}
