package harness

import (
	"strings"
	"testing"
)

func TestParseManifests(t *testing.T) {
	objs, err := ParseManifests("m.yaml", []byte("# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: ns}\ndata: {mode: \"0400\"}\n---\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: b\nspec: {replicas: 0400}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].String() != "ConfigMap ns/a (m.yaml:2)" || objs[1].String() != "DaemonSet b (m.yaml:8)" {
		t.Fatalf("objects %v", objs)
	}
	// JSON as kubectl sends it: a quoted string stays one, 0400 is octal.
	if got := string(objs[0].JSON); !strings.Contains(got, `"mode":"0400"`) {
		t.Errorf("ConfigMap JSON %s", got)
	}
	if got := string(objs[1].JSON); !strings.Contains(got, `"replicas":256`) {
		t.Errorf("DaemonSet JSON %s", got)
	}

	for _, tt := range []struct{ in, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n   bad: indent\n", "m.yaml:5: mapping values are not allowed"},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: Secret\nmetadata: {name: b}\n", "m.yaml:5: the manifest has no apiVersion"},
		{"apiVersion: v1\nmetadata: {name: a}\n", "m.yaml:1: the manifest has no kind"},
		{"apiVersion: v1\nkind: ConfigMap\n", "m.yaml:1: the manifest has no metadata.name"},
		{"- a\n- b\n", "m.yaml:1: a manifest is a mapping, not a list"},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [a]}\n", "m.yaml:1: apiVersion, kind and metadata"},
	} {
		if _, err := ParseManifests("m.yaml", []byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseManifests(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
}
