package decisionlog

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// eventWriter writes the events a Shipper ships: OPA's decision log event
// (plugins/logs EventV1), its keys as OPA writes them, with meshid's
// extras beside. It writes right after the lineWriter wrote the same
// record's line, and copies the line's input and result rather than
// encoding them again: they are the bulk of an event, and masked and
// capped already.
type eventWriter struct {
	labels []byte // the labels object, encoded once
	// path and bundles are encoded for the last decision path and policy
	// set seen: they change with a reload, not with a decision.
	pathFrom, path string
	bundlesOf      *PolicySet
	bundles        []byte
	buf            []byte
}

// errorCode is the code of an event's error, in the shape of OPA's
// errors ({"code", "message"}): meshid's errors have no OPA code.
const errorCode = "meshid_decision_error"

// event writes r's event into e.buf, from w's line of r.
func (e *eventWriter) event(w *lineWriter, r *Record) {
	line := w.buf
	w.buf, w.limit, w.over = e.buf[:0], noLimit, 0
	w.writeString(`{"decision_id":`)
	w.str(r.ID, noLimit)
	w.writeString(`,"labels":`)
	w.write(e.labels)
	if r.Path != "" {
		if r.Path != e.pathFrom {
			e.pathFrom, e.path = r.Path, opaPath(r.Path)
		}
		w.writeString(`,"path":`)
		w.str(e.path, noLimit)
	}
	if r.Policy != nil {
		w.writeString(`,"revision":`)
		w.str(r.Policy.Revision, noLimit)
		if r.Policy != e.bundlesOf {
			e.bundlesOf, e.bundles = r.Policy, encodeBundles(r.Policy.Bundles)
		}
		w.write(e.bundles)
	}
	if w.input.end > 0 {
		w.writeString(`,"input":`)
		w.write(line[w.input.start:w.input.end])
	}
	if w.result.end > 0 {
		w.writeString(`,"result":`)
		w.write(line[w.result.start:w.result.end])
	}
	if len(w.maskedHeaders) > 0 {
		w.writeString(`,"masked":[`)
		for i, h := range w.maskedHeaders {
			if i > 0 {
				w.writeString(",")
			}
			w.str("/input/attributes/request/http/headers/"+pointerEscape.Replace(h), noLimit)
		}
		w.writeString("]")
	}
	if r.Err != nil {
		w.writeString(`,"error":{"code":"` + errorCode + `","message":`)
		w.str(r.Err.Error(), w.maxField)
		w.writeString("}")
	}
	w.writeString(`,"timestamp":"`)
	w.write(r.Time.UTC().AppendFormat(w.scratch[:0], time.RFC3339Nano))
	w.writeString(`","metrics":{"timer_server_handler_ns":`)
	w.write(strconv.AppendInt(w.scratch[:0], r.Duration.Nanoseconds(), 10))
	w.writeString(`},"allowed":` + strconv.FormatBool(r.Allowed))
	if r.DryRun {
		w.writeString(`,"dry_run":true`)
	}
	if w.reason != "" {
		w.writeString(`,"reason":`)
		w.str(w.reason, w.maxField)
	}
	if w.truncated {
		w.writeString(`,"truncated":true`)
	}
	w.writeString("}")
	e.buf, w.buf = w.buf, line
}

// pointerEscape escapes a JSON pointer's reference token (RFC 6901).
var pointerEscape = strings.NewReplacer("~", "~0", "/", "~1")

// opaPath is the decision reference as OPA-Envoy names it in its events:
// data.envoy.authz.allow is envoy/authz/allow.
func opaPath(ref string) string {
	r, err := ast.ParseRef(ref)
	if err != nil || len(r) == 0 || !r[0].Equal(ast.DefaultRootDocument) {
		return strings.ReplaceAll(strings.TrimPrefix(ref, "data."), ".", "/")
	}
	parts := make([]string, 0, len(r)-1)
	for _, t := range r[1:] {
		if s, ok := t.Value.(ast.String); ok {
			parts = append(parts, string(s))
		} else {
			parts = append(parts, t.String())
		}
	}
	return strings.Join(parts, "/")
}

// encodeBundles is the bundles key of an event: {"name": {"revision": r}}
// for each bundle, or nothing when there is none.
func encodeBundles(bundles map[string]string) []byte {
	if len(bundles) == 0 {
		return nil
	}
	names := make([]string, 0, len(bundles))
	for n := range bundles {
		names = append(names, n)
	}
	slices.Sort(names)
	b := []byte(`,"bundles":{`)
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = appendEscaped(b, n)
		b = append(b, `":{"revision":"`...)
		b = appendEscaped(b, bundles[n])
		b = append(b, `"}`...)
	}
	return append(b, '}')
}

// encodeLabels is the labels object of every event.
func encodeLabels(labels map[string]string) []byte {
	names := make([]string, 0, len(labels))
	for n := range labels {
		names = append(names, n)
	}
	slices.Sort(names)
	b := []byte{'{'}
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = appendEscaped(b, n)
		b = append(b, `":"`...)
		b = appendEscaped(b, labels[n])
		b = append(b, '"')
	}
	return append(b, '}')
}
