package input

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// ProtoDescriptors are the gRPC services whose request messages meshid
// decodes into input.parsed_body, as OPA-Envoy does with its
// proto-descriptor setting. A gRPC body is protobuf, which says nothing
// about itself: only the method's input type, looked up by the request
// path (/package.Service/Method), can turn it into a document.
//
// It is immutable once loaded and safe for concurrent use.
type ProtoDescriptors struct {
	// methods maps "package.Service/Method" to the method.
	methods map[string]protoreflect.MethodDescriptor
	types   protoTypes
}

// LoadProtoDescriptors reads a binary FileDescriptorSet, the file
// `protoc --include_imports --descriptor_set_out=FILE` writes (or
// `buf build -o FILE`). Every file an included file imports must be in the
// set, and the set must define at least one service: anything else is an
// error naming path and the problem, since the alternative, finding out
// when requests arrive, is a policy that silently sees null bodies.
func LoadProtoDescriptors(path string) (*ProtoDescriptors, error) {
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
	d, err := newProtoDescriptors(&set)
	if err != nil {
		return nil, fmt.Errorf("proto descriptor set %s: %w", path, err)
	}
	return d, nil
}

func newProtoDescriptors(set *descriptorpb.FileDescriptorSet) (*ProtoDescriptors, error) {
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
	d := &ProtoDescriptors{
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
func (d *ProtoDescriptors) Methods() []string {
	ms := make([]string, 0, len(d.methods))
	for name := range d.methods {
		ms = append(ms, "/"+name)
	}
	slices.Sort(ms)
	return ms
}

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
// that is not /package.Service/Method. A message longer than the body is
// truncated: null, never half a message.
func (d *ProtoDescriptors) parsedBody(path string, headers map[string]string, body []byte) (*ast.Term, bool, error) {
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
	t, err := d.messageTerm(dm.ProtoReflect())
	if err != nil {
		return nil, false, fmt.Errorf("gRPC request of /%s as JSON: %w", name, err)
	}
	return t, false, nil
}

// messageTerm is m as protojson.Marshal writes it (what OPA-Envoy decodes
// into parsed_body), built as a term without the JSON text in between:
// camelCase JSON names, populated fields only, 64-bit integers and bytes
// (base64) as strings, enums by name (by number when unknown). What
// protojson writes in a form of its own goes through protojson: the
// well-known types (Timestamp, Duration, Any, Struct, wrappers...), which
// are few in a request, and the rare messages with extensions, the proto1
// MessageSet wire format, or two fields sharing a JSON name.
// grpcbody_test.go holds protojson as the oracle.
func (d *ProtoDescriptors) messageTerm(m protoreflect.Message) (*ast.Term, error) {
	md := m.Descriptor()
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return d.protoJSONTerm(m)
	}
	if opts, ok := md.Options().(*descriptorpb.MessageOptions); ok && opts.GetMessageSetWireFormat() {
		return d.protoJSONTerm(m)
	}
	var pairs [][2]*ast.Term
	var err error
	slow := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.IsExtension() || !utf8.ValidString(fd.JSONName()) {
			slow = true
			return false
		}
		var t *ast.Term
		if t, err = d.fieldTerm(fd, v); err != nil {
			return false
		}
		pairs = append(pairs, ast.Item(ast.StringTerm(fd.JSONName()), t))
		return true
	})
	if slow {
		return d.protoJSONTerm(m)
	}
	if err != nil {
		return nil, err
	}
	obj := ast.NewObject(pairs...)
	if obj.Len() != len(pairs) {
		// Two fields with one JSON name: protojson's field order decides.
		return d.protoJSONTerm(m)
	}
	return ast.NewTerm(obj), nil
}

func (d *ProtoDescriptors) fieldTerm(fd protoreflect.FieldDescriptor, v protoreflect.Value) (*ast.Term, error) {
	switch {
	case fd.IsList():
		list := v.List()
		terms := make([]*ast.Term, list.Len())
		for i := range terms {
			t, err := d.singularTerm(fd, list.Get(i))
			if err != nil {
				return nil, err
			}
			terms[i] = t
		}
		return ast.ArrayTerm(terms...), nil
	case fd.IsMap():
		pairs := make([][2]*ast.Term, 0, v.Map().Len())
		var err error
		v.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			key := k.String() // protojson's key: the text of any key type
			if !utf8.ValidString(key) {
				err = fmt.Errorf("%s: key %w", fd.FullName(), errInvalidUTF8)
				return false
			}
			var t *ast.Term
			if t, err = d.singularTerm(fd.MapValue(), v); err != nil {
				return false
			}
			pairs = append(pairs, ast.Item(ast.StringTerm(key), t))
			return true
		})
		if err != nil {
			return nil, err
		}
		return ast.ObjectTerm(pairs...), nil
	}
	return d.singularTerm(fd, v)
}

func (d *ProtoDescriptors) singularTerm(fd protoreflect.FieldDescriptor, v protoreflect.Value) (*ast.Term, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.InternedTerm(v.Bool()), nil
	case protoreflect.StringKind:
		// proto3 strings were checked when decoded; proto2 ones were not.
		if !utf8.ValidString(v.String()) {
			return nil, fmt.Errorf("%s: %w", fd.FullName(), errInvalidUTF8)
		}
		return ast.StringTerm(v.String()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.NumberTerm(json.Number(strconv.FormatInt(v.Int(), 10))), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.NumberTerm(json.Number(strconv.FormatUint(v.Uint(), 10))), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.StringTerm(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.StringTerm(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.FloatKind:
		return floatTerm(v.Float(), 32), nil
	case protoreflect.DoubleKind:
		return floatTerm(v.Float(), 64), nil
	case protoreflect.BytesKind:
		return ast.StringTerm(base64.StdEncoding.EncodeToString(v.Bytes())), nil
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return nullTerm, nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.StringTerm(string(ev.Name())), nil
		}
		return ast.NumberTerm(json.Number(strconv.FormatInt(int64(v.Enum()), 10))), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return d.messageTerm(v.Message())
	}
	return nil, fmt.Errorf("%s has an unknown kind %v", fd.FullName(), fd.Kind())
}

// floatTerm writes a float as protojson does: the special values as
// strings, others in the shortest form that reads back the same, with an
// exponent only for very small or large magnitudes (as encoding/json).
func floatTerm(f float64, bitSize int) *ast.Term {
	switch {
	case math.IsNaN(f):
		return ast.StringTerm("NaN")
	case math.IsInf(f, 1):
		return ast.StringTerm("Infinity")
	case math.IsInf(f, -1):
		return ast.StringTerm("-Infinity")
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		small, large := abs < 1e-6, abs >= 1e21
		if bitSize == 32 {
			small, large = float32(abs) < 1e-6, float32(abs) >= 1e21
		}
		if small || large {
			format = 'e'
		}
	}
	s := strconv.FormatFloat(f, format, -1, bitSize)
	if format == 'e' {
		// 1e-07, as strconv writes it, is 1e-7 in JSON's usual form.
		if n := len(s); n >= 4 && s[n-4] == 'e' && s[n-3] == '-' && s[n-2] == '0' {
			s = s[:n-2] + s[n-1:]
		}
	}
	return ast.NumberTerm(json.Number(s))
}

// protoJSONTerm is m through protojson's text: the exact route for the
// forms messageTerm leaves to protojson.
func (d *ProtoDescriptors) protoJSONTerm(m protoreflect.Message) (*ast.Term, error) {
	bs, err := (protojson.MarshalOptions{Resolver: d.types}).Marshal(m.Interface())
	if err != nil {
		return nil, err
	}
	return jsonTerm(string(bs))
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
	return "", fmt.Errorf("content-type is gRPC but the path %q is not /package.Service/Method", path)
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
