package identity

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
)

func TestTemplateFill(t *testing.T) {
	const compose = "spiffe://example.org/compose/{docker:label:com.docker.compose.service}"
	const k8s = "spiffe://example.org/ns/{k8s:ns}/sa/{k8s:sa}"
	tests := []struct {
		name, template string
		have           []string
		want           string // "" when the caller gets nothing
		lacks          bool   // the entry does not match
		why            string // in the error when the value cannot fill the segment
	}{
		{"docker label", compose, []string{"docker:label:com.docker.compose.service:api", "unix:uid:0"}, "spiffe://example.org/compose/api", false, ""},
		{"k8s service account", k8s, []string{"k8s:ns:prod", "k8s:sa:web", "k8s:pod-name:web-1"}, "spiffe://example.org/ns/prod/sa/web", false, ""},
		{"one placeholder twice", "spiffe://example.org/{unix:uid}/x/{unix:uid}", []string{"unix:uid:7"}, "spiffe://example.org/7/x/7", false, ""},
		{"inside a segment", "spiffe://example.org/svc-{k8s:sa}.v1", []string{"k8s:sa:web"}, "spiffe://example.org/svc-web.v1", false, ""},
		{"env value", "spiffe://example.org/{docker:env:ROLE}", []string{"docker:env:ROLE=db"}, "spiffe://example.org/db", false, ""},
		{"lacks the label", compose, []string{"docker:label:app:api"}, "", true, ""},
		{"lacks one of two", k8s, []string{"k8s:ns:prod"}, "", true, ""},
		{"slash", compose, []string{"docker:label:com.docker.compose.service:api/admin"}, "", false, "outside A-Z"},
		{"dot dot", compose, []string{"docker:label:com.docker.compose.service:.."}, "", false, "relative path"},
		{"dot", compose, []string{"docker:label:com.docker.compose.service:."}, "", false, "relative path"},
		{"empty", compose, []string{"docker:label:com.docker.compose.service:"}, "", false, "is empty"},
		{"space", compose, []string{"docker:label:com.docker.compose.service:a b"}, "", false, "outside A-Z"},
		{"percent escape", compose, []string{"docker:label:com.docker.compose.service:a%2Fb"}, "", false, "outside A-Z"},
		{"colon", compose, []string{"docker:label:com.docker.compose.service:a:b"}, "", false, "outside A-Z"},
		{"non-ascii", compose, []string{"docker:label:com.docker.compose.service:ápi"}, "", false, "outside A-Z"},
		{"upper case kept", compose, []string{"docker:label:com.docker.compose.service:API"}, "spiffe://example.org/compose/API", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := ParseTemplate(tt.template, td)
			if err != nil {
				t.Fatal(err)
			}
			e := Entry{Template: tmpl, Source: "entries.yaml:2"}
			got, ok, err := e.For(sels(t, tt.have...))
			switch {
			case tt.want != "":
				if err != nil || !ok || got.SPIFFEID.String() != tt.want {
					t.Fatalf("For = %v, %v, %v; want %s", got.SPIFFEID, ok, err, tt.want)
				}
				if !tmpl.CanProduce(got.SPIFFEID) {
					t.Errorf("CanProduce(%s) = false for an ID the template made", got.SPIFFEID)
				}
			case tt.lacks:
				if err != nil || ok || e.Matches(sels(t, tt.have...)) {
					t.Fatalf("For = %v, %v, %v; want no match", got.SPIFFEID, ok, err)
				}
			default:
				if ok || err == nil || !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), "exactly one path segment") {
					t.Fatalf("For = %v, %v, %v; want a refusal saying %q", got.SPIFFEID, ok, err, tt.why)
				}
			}
		})
	}
}

// TestTemplateCannotLeaveItsSegment: whatever value a workload sets, the
// ID it gets is one the template can make, in the trust domain, with the
// literal parts where the operator put them.
func TestTemplateCannotLeaveItsSegment(t *testing.T) {
	tmpl, err := ParseTemplate("spiffe://example.org/compose/{docker:label:svc}/sidecar", td)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"web", "../admin", "a/../../b", "x/sidecar", "%2e%2e", "a\x00b", "web\n", "-", "_", "a.b"} {
		id, err := tmpl.Fill([]attestor.Selector{{Type: "docker", Value: "label:svc:" + v}})
		if err != nil {
			continue
		}
		segs := strings.Split(id.Path(), "/")
		if id.TrustDomain() != td || len(segs) != 4 || segs[1] != "compose" || segs[3] != "sidecar" || segs[2] != v {
			t.Errorf("value %q gave %s, outside the one segment it fills", v, id)
		}
	}
}

func TestParseTemplateRejects(t *testing.T) {
	tests := []struct{ in, want string }{
		{"spiffe://example.org/{k8s:nss}", `unknown k8s key "nss"`},
		{"spiffe://example.org/{kube:ns}", `unknown selector type "kube"`},
		{"spiffe://example.org/{docker:label}", "say which label"},
		{"spiffe://example.org/{docker:label:}", "say which label"},
		{"spiffe://example.org/{k8s:ns:x}", "takes no name"},
		{"spiffe://example.org/{unix:supplementary_gid}", "several"},
		{"spiffe://example.org/{unix:path}", "can never fill a path segment"},
		{"spiffe://example.org/{docker:image_config_digest}", "can never fill a path segment"},
		{"spiffe://example.org/{}", "empty"},
		{"spiffe://example.org/{k8s:ns", "'{' at offset 21 is not closed"},
		{"spiffe://example.org/ns}/{k8s:ns}", "'}' at offset 23 closes no placeholder"},
		{"spiffe://example.org/{k8s:{k8s:ns}}", "placeholder {k8s:{k8s:ns}"},
		{"spiffe://example.org/fixed", "no placeholder"},
		{"spiffe://evil.org/{k8s:ns}", `trust domain "evil.org" is not this node's "example.org"`},
		{"spiffe://{k8s:ns}.org/x", "trust domain may not hold a placeholder"},
		{"spiffe://example.org", "no placeholder"},
		{"https://example.org/{k8s:ns}", "want spiffe://"},
		{"spiffe://example.org//{k8s:ns}", "not a SPIFFE ID once filled"},
		{"spiffe://example.org/../{k8s:ns}", "not a SPIFFE ID once filled"},
		{"spiffe://example.org/{k8s:ns}/", "not a SPIFFE ID once filled"},
		{"spiffe://example.org/a b/{k8s:ns}", "not a SPIFFE ID once filled"},
	}
	for _, tt := range tests {
		_, err := ParseTemplate(tt.in, td)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseTemplate(%q) = %v; want an error saying %q", tt.in, err, tt.want)
		}
	}
}

func TestParseEntriesTemplates(t *testing.T) {
	in := `entries:
  - spiffe_id_template: spiffe://example.org/ns/{k8s:ns}/sa/{k8s:sa}
  - spiffe_id_template: spiffe://example.org/compose/{docker:label:com.docker.compose.service}
    selectors: ["docker:label:com.docker.compose.project:demo", "unix:uid:101"]
`
	entries, err := ParseEntries("entries.yaml", []byte(in), td)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Template == nil || !entries[0].SPIFFEID.IsZero() || entries[0].Name() != "spiffe://example.org/ns/{k8s:ns}/sa/{k8s:sa}" ||
		len(entries[1].Selectors) != 2 || entries[1].Source != "entries.yaml:3" {
		t.Fatalf("entries = %+v", entries)
	}

	bad := []struct{ name, in, want string }{
		{"unknown placeholder", "entries:\n  - spiffe_id_template: spiffe://example.org/{k8s:namespace}\n",
			`entries.yaml:2: spiffe_id_template "spiffe://example.org/{k8s:namespace}": placeholder {k8s:namespace}: "k8s:namespace": unknown k8s key "namespace"`},
		{"outside the trust domain", "entries:\n  - selectors: [\"unix:uid:1\"]\n    spiffe_id_template: spiffe://evil.org/{unix:uid}\n",
			`entries.yaml:3: spiffe_id_template "spiffe://evil.org/{unix:uid}": trust domain "evil.org" is not this node's`},
		{"both", "entries:\n  - spiffe_id: spiffe://example.org/a\n    spiffe_id_template: spiffe://example.org/{unix:uid}\n    selectors: [\"unix:uid:1\"]\n",
			"entries.yaml:3: entry has both spiffe_id and spiffe_id_template"},
		{"duplicate", "entries:\n  - spiffe_id_template: spiffe://example.org/{unix:uid}\n  - spiffe_id_template: spiffe://example.org/{unix:uid}\n",
			`entries.yaml:3: entry "spiffe://example.org/{unix:uid}" duplicates the one at entries.yaml:2`},
		{"misspelt key", "entries:\n  - spiffe_id_templat: spiffe://example.org/{unix:uid}\n", "entries.yaml:2"},
	}
	for _, tt := range bad {
		_, err := ParseEntries("entries.yaml", []byte(tt.in), td)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v; want %q", tt.name, err, tt.want)
		}
	}
}

// labelAttestor attests a caller by uid and, when it has one, the compose
// service label its pid stands for in the test.
type labelAttestor map[int32]string

func (a labelAttestor) Attest(_ context.Context, c attestor.Caller) ([]attestor.Selector, error) {
	sels := []attestor.Selector{{Type: "unix", Value: "uid:101"}}
	if svc, ok := a[c.PID]; ok {
		sels = append(sels, attestor.Selector{Type: "docker", Value: "label:com.docker.compose.service:" + svc})
	}
	return sels, nil
}

func templateManager(t *testing.T, labels labelAttestor, log *slog.Logger) *Manager {
	t.Helper()
	authority, err := ca.Open(ca.Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ParseEntries("entries.yaml", []byte(`entries:
  - spiffe_id_template: spiffe://example.org/compose/{docker:label:com.docker.compose.service}
    selectors: ["unix:uid:101"]
`), td)
	if err != nil {
		t.Fatal(err)
	}
	return NewManager(Options{Entries: entries, DefaultTTL: time.Hour, DefaultJWTTTL: 5 * time.Minute,
		Minter: authority, Attestor: labels, Log: log})
}

// TestOneTemplateEntryManyIdentities: callers of one template entry get
// the IDs their own values make, each its own SVID; callers with one value
// share one; a caller whose value is no path segment gets nothing, and the
// log says why.
func TestOneTemplateEntryManyIdentities(t *testing.T) {
	var logs bytes.Buffer
	m := templateManager(t, labelAttestor{1: "web", 2: "api", 3: "web", 4: "../db"}, slog.New(slog.NewTextHandler(&logs, nil)))
	watch := func(pid int32) (*Subscription, []string) {
		sub, err := m.Watch(context.Background(), attestor.Caller{PID: pid, UID: 101})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sub.Close)
		return sub, ids(t, sub)
	}
	web, webIDs := watch(1)
	api, apiIDs := watch(2)
	web2, web2IDs := watch(3)
	_, badIDs := watch(4)
	_, noLabelIDs := watch(5)
	if !slicesEqual(webIDs, []string{"compose/web"}) || !slicesEqual(apiIDs, []string{"compose/api"}) ||
		!slicesEqual(web2IDs, webIDs) || len(badIDs) != 0 || len(noLabelIDs) != 0 {
		t.Fatalf("web %v, api %v, web again %v, ../db %v, no label %v", webIDs, apiIDs, web2IDs, badIDs, noLabelIDs)
	}
	xw, _ := web.Current()
	xa, _ := api.Current()
	xw2, _ := web2.Current()
	if xw.SVIDs[0] != xw2.SVIDs[0] || xw.SVIDs[0] == xa.SVIDs[0] {
		t.Error("callers of one template ID should share an SVID and callers of two should not")
	}
	if leaf := xa.SVIDs[0].Certificates[0]; len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/compose/api" {
		t.Errorf("api's SVID names %v", leaf.URIs)
	}
	for _, want := range []string{"template entry gives the caller no identity", "entries.yaml:2", `\"../db\"`, "exactly one path segment"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	// The SVID of an ID only a template caller held goes when its last
	// holder does: callers choose how many there are.
	key := func(id string) svidKey { return svidKey{id: id, ttl: time.Hour} }
	web.Close()
	if !m.cached(key("spiffe://example.org/compose/web")) {
		t.Error("web's SVID was dropped while another caller still holds it")
	}
	web2.Close()
	api.Close()
	if m.cached(key("spiffe://example.org/compose/web")) || m.cached(key("spiffe://example.org/compose/api")) {
		t.Error("template SVIDs are still cached after their callers left")
	}
}

func (m *Manager) cached(k svidKey) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.svids[k]
	return ok
}

// TestSetEntriesKeepsTemplateSVIDsOfLiveCallers: a reload keeps the SVIDs
// that callers hold from a template entry still in force, so they are not
// minted again.
func TestSetEntriesKeepsTemplateSVIDsOfLiveCallers(t *testing.T) {
	m := templateManager(t, labelAttestor{1: "web"}, nil)
	sub, err := m.Watch(context.Background(), attestor.Caller{PID: 1, UID: 101})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	before, _ := sub.Current()
	m.SetEntries(m.Entries())
	after, _ := sub.Current()
	if before.SVIDs[0] != after.SVIDs[0] || changed(sub) {
		t.Error("reloading the same template entry re-minted or notified")
	}
	m.SetEntries(mustEntries(t, "fixed=101"))
	if got := ids(t, sub); !slicesEqual(got, []string{"fixed"}) || !changed(sub) {
		t.Errorf("after the template entry went: %v", got)
	}
	if m.cached(svidKey{id: "spiffe://example.org/compose/web", ttl: time.Hour}) {
		t.Error("SVID of a removed template entry is still cached")
	}
}

func TestExplainTemplate(t *testing.T) {
	m := templateManager(t, labelAttestor{1: "api", 2: "a..b/c"}, nil)
	for pid, want := range map[int32]EntryVerdict{
		1: {SPIFFEID: "spiffe://example.org/compose/api", Matched: true},
		2: {Refused: `{docker:label:com.docker.compose.service} is "a..b/c"`},
		3: {Missing: []string{"{docker:label:com.docker.compose.service}"}},
	} {
		x, err := m.Explain(context.Background(), attestor.Caller{PID: pid, UID: 101})
		if err != nil {
			t.Fatal(err)
		}
		got := x.Entries[0]
		if got.Template != "spiffe://example.org/compose/{docker:label:com.docker.compose.service}" || got.Matched != want.Matched ||
			got.SPIFFEID != want.SPIFFEID || !strings.Contains(got.Refused, want.Refused) || !slicesEqual(got.Missing, want.Missing) {
			t.Errorf("pid %d: %+v", pid, got)
		}
	}
}

// FuzzTemplateFill: for any value a workload could set, the ID a template
// gives is in the trust domain, one the template can make, and the value
// fills exactly its segment.
func FuzzTemplateFill(f *testing.F) {
	for _, v := range []string{"web", "..", "a/b", "", "%2F", "a:b", "ü", "-._"} {
		f.Add(v)
	}
	tmpl, err := ParseTemplate("spiffe://example.org/c/{docker:label:svc}/x", td)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v string) {
		id, err := tmpl.Fill([]attestor.Selector{{Type: "docker", Value: "label:svc:" + v}})
		if err != nil {
			return
		}
		if id.TrustDomain() != td || !tmpl.CanProduce(id) || id.Path() != "/c/"+v+"/x" {
			t.Fatalf("value %q gave %s", v, id)
		}
	})
}
