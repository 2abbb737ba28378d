package prototerm

import (
	"encoding/base64"
	"math"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// Map is m as the current OPA-Envoy plugin puts a CheckRequest in its
// input: it walks the message by reflection into a Go map and
// ast.InterfaceToValue turns that into a value. Map writes the value that
// walk ends in without the map:
//
//   - camelCase JSON names, populated fields only (a oneof member even at
//     its zero value), every message a nested object, a google.protobuf.Struct
//     as the plain object its AsMap is;
//   - 64-bit integers and enums as numbers, bools as booleans;
//   - bytes as base64 text (what encoding/json makes of []byte on the way
//     into OPA);
//   - doubles as strconv's shortest 'g' form (2500000 is 2.5e+06) and
//     floats in 'f' form, as OPA writes the two Go types; in a Struct,
//     NaN and ±Inf are the strings "NaN", "Infinity" and "-Infinity", as
//     AsMap makes them (a double or float field outside one, which no
//     CheckRequest has, would be OPA's numbers NaN, +Inf and -Inf, which
//     it carries but cannot compare);
//   - Timestamp, Duration, Any and the wrappers as the messages they are
//     ({"seconds", "nanos"}, {"typeUrl", "value"}), with nothing resolved.
//
// Every message can be written this way, so there is no error.
func Map(m protoreflect.Message) *ast.Term {
	if s, ok := m.Interface().(*structpb.Struct); ok {
		return structTerm(s)
	}
	pairs := make([][2]*ast.Term, 0, m.Descriptor().Fields().Len())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var t *ast.Term
		switch {
		case fd.IsMap():
			mp := v.Map()
			entries := make([][2]*ast.Term, 0, mp.Len())
			mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				entries = append(entries, ast.Item(ast.StringTerm(k.String()), mapScalar(fd.MapValue(), v)))
				return true
			})
			t = ast.ObjectTerm(entries...)
		case fd.IsList():
			list := v.List()
			elems := make([]*ast.Term, list.Len())
			for i := range elems {
				elems[i] = mapScalar(fd, list.Get(i))
			}
			t = ast.ArrayTerm(elems...)
		default:
			t = mapScalar(fd, v)
		}
		pairs = append(pairs, ast.Item(ast.StringTerm(fd.JSONName()), t))
		return true
	})
	return ast.ObjectTerm(pairs...)
}

// mapScalar is one value of field fd (or of one of its list or map
// entries) as Map writes it.
func mapScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) *ast.Term {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return Map(v.Message())
	case protoreflect.BoolKind:
		return ast.InternedTerm(v.Bool())
	case protoreflect.StringKind:
		return ast.StringTerm(v.String())
	case protoreflect.BytesKind:
		if v.Bytes() == nil {
			return nullTerm // encoding/json's nil slice
		}
		return ast.StringTerm(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		return ast.InternedTerm(int64(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.InternedTerm(v.Int())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.NewTerm(ast.Number(strconv.FormatUint(v.Uint(), 10)))
	case protoreflect.FloatKind:
		return ast.NewTerm(ast.Number(strconv.FormatFloat(v.Float(), 'f', -1, 32)))
	case protoreflect.DoubleKind:
		return doubleTerm(v.Float())
	}
	return nullTerm // no other kind exists
}

// doubleTerm is a Go float64 as OPA makes it a number: the shortest
// 'g' form, NaN and ±Inf included.
func doubleTerm(f float64) *ast.Term {
	return ast.NewTerm(ast.Number(strconv.FormatFloat(f, 'g', -1, 64)))
}

// structTerm is s.AsMap() as a value: a Value without a kind is null, as
// AsInterface makes it, and the special numbers are its strings.
func structTerm(s *structpb.Struct) *ast.Term {
	fields := s.GetFields()
	pairs := make([][2]*ast.Term, 0, len(fields))
	for k, v := range fields {
		pairs = append(pairs, ast.Item(ast.StringTerm(k), valueTerm(v)))
	}
	return ast.ObjectTerm(pairs...)
}

func valueTerm(v *structpb.Value) *ast.Term {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		if k != nil {
			// AsInterface's own strings for what JSON has no number for.
			switch f := k.NumberValue; {
			case math.IsNaN(f):
				return ast.StringTerm("NaN")
			case math.IsInf(f, 1):
				return ast.StringTerm("Infinity")
			case math.IsInf(f, -1):
				return ast.StringTerm("-Infinity")
			}
			return doubleTerm(k.NumberValue)
		}
	case *structpb.Value_StringValue:
		if k != nil {
			return ast.StringTerm(k.StringValue)
		}
	case *structpb.Value_BoolValue:
		if k != nil {
			return ast.InternedTerm(k.BoolValue)
		}
	case *structpb.Value_StructValue:
		if k != nil {
			return structTerm(k.StructValue)
		}
	case *structpb.Value_ListValue:
		if k == nil {
			break
		}
		vals := k.ListValue.GetValues()
		elems := make([]*ast.Term, len(vals))
		for i, e := range vals {
			elems[i] = valueTerm(e)
		}
		return ast.ArrayTerm(elems...)
	}
	return nullTerm
}
