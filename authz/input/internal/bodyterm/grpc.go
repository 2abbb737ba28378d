package bodyterm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
	"github.com/meshid/meshid/authz/input/internal/prototerm"
)

// Descriptors are the gRPC services whose request messages meshid
// decodes into input.parsed_body, as OPA-Envoy does with its
// proto-descriptor setting. A gRPC body is protobuf, which says nothing
// about itself: only the method's input type, looked up by the request
// path (/package.Service/Method), can turn it into a document.
//
// It is immutable once loaded and safe for concurrent use.
type Descriptors struct {
	// methods maps "package.Service/Method" to the method.
	methods map[string]protoreflect.MethodDescriptor
	types   protoTypes
}

// LoadDescriptors reads the binary FileDescriptorSet at path, as
// input.LoadProtoDescriptors says.
func LoadDescriptors(path string) (*Descriptors, error) {
	bs, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("proto descriptor set: %w", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(bs, &set); err != nil {
		return nil, fmt.Errorf("proto descriptor set %s is not a binary FileDescriptorSet: %w", path, err)
	}
	// Protobuf's wire format accepts much that is not a descriptor set:
	// text, JSON or a single FileDescriptorProto mostly decode as unknown
	// fields.
	if len(set.ProtoReflect().GetUnknown()) > 0 || len(set.GetFile()) == 0 {
		return nil, fmt.Errorf("proto descriptor set %s is not a binary FileDescriptorSet (protoc --include_imports --descriptor_set_out)", path)
	}
	d, err := newDescriptors(&set)
	if err != nil {
		return nil, fmt.Errorf("proto descriptor set %s: %w", path, err)
	}
	return d, nil
}

func newDescriptors(set *descriptorpb.FileDescriptorSet) (*Descriptors, error) {
	// Say which import is missing in protoc's terms before protodesc says
	// it could not resolve it.
	names := map[string]bool{}
	for _, f := range set.GetFile() {
		names[f.GetName()] = true
	}
	for _, f := range set.GetFile() {
		for _, dep := range f.GetDependency() {
			if !names[dep] {
				return nil, fmt.Errorf("%s imports %s, which is not in the set: build it with --include_imports", f.GetName(), dep)
			}
		}
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, err
	}
	d := &Descriptors{
		methods: map[string]protoreflect.MethodDescriptor{},
		types:   protoTypes{dynamicpb.NewTypes(files)},
	}
	files.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			for j := range s.Methods().Len() {
				m := s.Methods().Get(j)
				d.methods[string(s.FullName())+"/"+string(m.Name())] = m
			}
		}
		return true
	})
	if len(d.methods) == 0 {
		return nil, errors.New("defines no gRPC service methods")
	}
	return d, nil
}

// Methods are the gRPC methods the set describes, as request paths
// (/package.Service/Method), sorted; for a startup log line. Requests of
// client-streaming methods among them are not decoded.
func (d *Descriptors) Methods() []string {
	ms := make([]string, 0, len(d.methods))
	for name := range d.methods {
		ms = append(ms, "/"+name)
	}
	slices.Sort(ms)
	return ms
}

// errSkipped is a gRPC body not decoded for its size.
var errSkipped = errors.New("body larger than the limit")

// grpcPrefixLen is the gRPC message prefix: a compressed flag and a
// big-endian uint32 length.
const grpcPrefixLen = 5

// parsedBody decodes a gRPC request body the way OPA-Envoy does, with the
// differences docs/authz.md lists: the first (and only) message of a unary
// or server-streaming call, decoded with the input type of the method
// the path names and written as protojson writes it (camelCase names,
// 64-bit integers as strings, bytes as base64, enums by name).
//
// What meshid cannot decode is null, as in OPA-Envoy: a method the set
// does not know, a client-streaming method (the body holds many messages,
// possibly cut), a compressed message, a codec other than protobuf
// (application/grpc+json) or gRPC-Web's base64 text. A body that is not what it claims to be is an
// error, hence a deny: no gRPC frame, a compressed flag that is neither 0
// nor 1 or set without a grpc-encoding, bytes after the message (a unary
// request has one), a message that does not decode as its type, a path
// that is not /package.Service/Method, a message beyond budget. A message
// longer than the body is truncated: null, never half a message. A whole
// message longer than maxBytes is not decoded: errSkipped.
func (d *Descriptors) parsedBody(path string, headers map[string]string, body []byte, maxBytes int, budget *jsonterm.Budget) (*ast.Term, bool, error) {
	if !protobufCodec(headers["content-type"]) {
		return nullTerm, false, nil
	}
	name, err := grpcMethodName(path)
	if err != nil {
		return nil, false, err
	}
	if len(body) < grpcPrefixLen {
		return nil, false, fmt.Errorf("content-type is gRPC but the body (%d bytes) is shorter than a message prefix", len(body))
	}
	compressed := body[0]
	size := uint64(binary.BigEndian.Uint32(body[1:grpcPrefixLen]))
	msg := body[grpcPrefixLen:]
	switch compressed {
	case 0:
	case 1:
		if enc := headers["grpc-encoding"]; enc == "" || enc == "identity" {
			return nil, false, errors.New("content-type is gRPC but the message is flagged compressed without a grpc-encoding")
		}
	default:
		return nil, false, fmt.Errorf("content-type is gRPC but the body is not: compressed flag %d", compressed)
	}
	if size > uint64(len(msg)) {
		return nullTerm, true, nil
	}
	if len(body) > maxBytes {
		return nil, false, errSkipped
	}
	m := d.methods[name]
	if m == nil || m.IsStreamingClient() || compressed == 1 {
		return nullTerm, false, nil
	}
	if extra := uint64(len(msg)) - size; extra > 0 {
		return nil, false, fmt.Errorf("content-type is gRPC but the body has %d bytes after the request message of /%s, which takes one", extra, name)
	}
	dm := dynamicpb.NewMessage(m.Input())
	if err := (proto.UnmarshalOptions{Resolver: d.types}).Unmarshal(msg, dm); err != nil {
		return nil, false, fmt.Errorf("gRPC request of /%s is not a %s: %w", name, m.Input().FullName(), err)
	}
	t, err := prototerm.Message(dm.ProtoReflect(), d.types, budget)
	if err != nil {
		return nil, false, fmt.Errorf("gRPC request of /%s as JSON: %w", name, err)
	}
	return t, false, nil
}

// protobufCodec tells gRPC content types whose messages are protobuf
// (application/grpc, application/grpc+proto, and gRPC-Web's binary forms)
// from those meshid cannot decode with descriptors: another codec
// (application/grpc+json) or gRPC-Web's base64 text.
func protobufCodec(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	switch strings.ToLower(strings.TrimSpace(mt)) {
	case "application/grpc", "application/grpc+proto", "application/grpc-web", "application/grpc-web+proto":
		return true
	}
	return false
}

// grpcMethodName is "package.Service/Method" from a gRPC request path,
// split like parsed_path: unescaped, leading slashes dropped, and then
// exactly two segments, as OPA-Envoy requires.
func grpcMethodName(path string) (string, error) {
	rawPath, _, _ := strings.Cut(path, "?")
	p, err := url.PathUnescape(rawPath)
	if err == nil && strings.Count(strings.TrimLeft(p, "/"), "/") == 1 {
		return strings.TrimLeft(p, "/"), nil
	}
	return "", fmt.Errorf("content-type is gRPC but the path %s is not /package.Service/Method", QuoteShort(path))
}

// protoTypes resolves the types of Any fields: first in the descriptor
// set, then among the types compiled into meshid (all OPA-Envoy resolves,
// with protoregistry's global registry). Extensions, which extend the set's
// own messages, come from the set only.
type protoTypes struct{ *dynamicpb.Types }

func (t protoTypes) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := t.Types.FindMessageByName(name); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByName(name)
}

func (t protoTypes) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := t.Types.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByURL(url)
}
