package authztest

import (
	"regexp"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshid/meshid/authz/response"
)

var decisionIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// WithoutDecisionID is a copy of resp without its decision id, checking
// the id is a UUID and everywhere it belongs, so the rest can be compared
// with a fixed value or another server's answer. It returns the id too.
func WithoutDecisionID(t testing.TB, resp *authv3.CheckResponse) (*authv3.CheckResponse, string) {
	t.Helper()
	resp = proto.Clone(resp).(*authv3.CheckResponse)
	id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
	if !decisionIDPattern.MatchString(id) {
		t.Fatalf("dynamic metadata decision_id = %q, want a UUID", id)
	}
	delete(resp.DynamicMetadata.Fields, "decision_id")
	if len(resp.DynamicMetadata.Fields) == 0 {
		resp.DynamicMetadata = nil
	}
	strip := func(hs []*corev3.HeaderValueOption, where string) []*corev3.HeaderValueOption {
		i := slices.IndexFunc(hs, func(h *corev3.HeaderValueOption) bool { return h.GetHeader().GetKey() == response.DecisionIDHeader })
		if i < 0 || hs[i].GetHeader().GetValue() != id {
			t.Fatalf("%s headers %v lack %s: %s", where, hs, response.DecisionIDHeader, id)
		}
		hs = slices.Delete(hs, i, i+1)
		if len(hs) == 0 {
			return nil
		}
		return hs
	}
	switch r := resp.GetHttpResponse().(type) {
	case *authv3.CheckResponse_OkResponse:
		r.OkResponse.Headers = strip(r.OkResponse.Headers, "upstream")
		r.OkResponse.ResponseHeadersToAdd = strip(r.OkResponse.ResponseHeadersToAdd, "client")
	case *authv3.CheckResponse_DeniedResponse:
		r.DeniedResponse.Headers = strip(r.DeniedResponse.Headers, "denied")
	}
	return resp, id
}

// IsDecisionID says whether s has the form of a decision id (a UUID v4).
func IsDecisionID(s string) bool { return decisionIDPattern.MatchString(s) }
