// Package prototerm writes a protobuf message as an ast.Term in the two
// forms OPA-Envoy gives policies, without the JSON text or Go map in
// between: Message, the JSON protojson.Marshal writes (what
// input.parsed_body is for a gRPC request, held to protojson's text by
// package input's grpcbody_test.go), and Map, the plugin's walk of the
// proto (what input.attributes is by default, held to the plugin's rules
// by package input's input_internal_test.go).
//
// It never decodes wire bytes and never looks a type up by itself: the
// message comes decoded, and Message's Resolver for the types of Any
// fields and extensions comes with it (Map resolves nothing, as the
// plugin's walk does not). What Message builds is drawn from a
// jsonterm.Budget, as a JSON body's values are; Map writes what Envoy
// sent, which needs no bound.
package prototerm

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
)

// Resolver finds the types of Any fields and extensions, as protojson's.
type Resolver interface {
	protoregistry.ExtensionTypeResolver
	protoregistry.MessageTypeResolver
}

// Message is m as protojson.Marshal writes it (what OPA-Envoy decodes
// into parsed_body), built as a term without the JSON text in between:
// camelCase JSON names, populated fields only, 64-bit integers and bytes
// (base64) as strings, enums by name (by number when unknown). What
// protojson writes in a form of its own goes through protojson, with r:
// the well-known types (Timestamp, Duration, Any, Struct, wrappers...),
// which are few in a request, and the rare messages with extensions, the
// proto1 MessageSet wire format, or two fields sharing a JSON name.
//
// Every value written (message, field, list or map entry) is drawn from
// b, and every message, list and map enters a level of it: a message
// beyond b is an error wrapping jsonterm.ErrTooDeep or ErrTooMany, or
// b's stop error.
func Message(m protoreflect.Message, r Resolver, b *jsonterm.Budget) (*ast.Term, error) {
	return writer{resolver: r, budget: b}.messageTerm(m)
}

// writer writes messages with the resolver protojson needs for the
// forms it writes itself, within a budget.
type writer struct {
	resolver Resolver
	budget   *jsonterm.Budget
}

var (
	nullTerm       = ast.NullTerm()
	errInvalidUTF8 = errors.New("invalid UTF-8")
)

// messageTerm is Message of m, and of every message field within it.
func (w writer) messageTerm(m protoreflect.Message) (*ast.Term, error) {
	md := m.Descriptor()
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return w.protoJSONTerm(m)
	}
	if opts, ok := md.Options().(*descriptorpb.MessageOptions); ok && opts.GetMessageSetWireFormat() {
		return w.protoJSONTerm(m)
	}
	if err := w.open(); err != nil {
		return nil, err
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
		if t, err = w.fieldTerm(fd, v); err != nil {
			return false
		}
		pairs = append(pairs, ast.Item(ast.StringTerm(fd.JSONName()), t))
		return true
	})
	w.budget.Leave()
	// Written through protojson instead, the message is drawn anew; what
	// was drawn for it here stays drawn, erring on the side of the limit.
	if slow {
		return w.protoJSONTerm(m)
	}
	if err != nil {
		return nil, err
	}
	obj := ast.NewObject(pairs...)
	if obj.Len() != len(pairs) {
		// Two fields with one JSON name: protojson's field order decides.
		return w.protoJSONTerm(m)
	}
	return ast.NewTerm(obj), nil
}

// open draws a message, list or map from the budget and enters it.
func (w writer) open() error {
	if err := w.budget.Spend(1); err != nil {
		return err
	}
	return w.budget.Enter()
}

func (w writer) fieldTerm(fd protoreflect.FieldDescriptor, v protoreflect.Value) (*ast.Term, error) {
	switch {
	case fd.IsList() || fd.IsMap():
		if err := w.open(); err != nil {
			return nil, err
		}
		defer w.budget.Leave()
	}
	switch {
	case fd.IsList():
		list := v.List()
		terms := make([]*ast.Term, list.Len())
		for i := range terms {
			t, err := w.singularTerm(fd, list.Get(i))
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
			if t, err = w.singularTerm(fd.MapValue(), v); err != nil {
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
	return w.singularTerm(fd, v)
}

func (w writer) singularTerm(fd protoreflect.FieldDescriptor, v protoreflect.Value) (*ast.Term, error) {
	if k := fd.Kind(); k != protoreflect.MessageKind && k != protoreflect.GroupKind {
		// A message draws itself.
		if err := w.budget.Spend(1); err != nil {
			return nil, err
		}
	}
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
		return w.messageTerm(v.Message())
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
func (w writer) protoJSONTerm(m protoreflect.Message) (*ast.Term, error) {
	bs, err := (protojson.MarshalOptions{Resolver: w.resolver}).Marshal(m.Interface())
	if err != nil {
		return nil, err
	}
	// jsonterm keeps numbers as written, as util.UnmarshalJSON does:
	// large integers stay exact.
	return jsonterm.Parse(string(bs), w.budget)
}
