package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// tree is meshid with one group, svid, that holds fetch.
func tree(stderr *bytes.Buffer) (root, svid, fetch *cobra.Command) {
	root = &cobra.Command{Use: "meshid", SilenceErrors: true, SilenceUsage: true}
	root.SetErr(stderr)
	fetch = &cobra.Command{Use: "fetch", Short: "fetch", Args: NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	svid = Group("svid", "", "SVIDs", "All about SVIDs.", "  meshid svid fetch", fetch)
	root.AddCommand(svid)
	return root, svid, fetch
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		cmd       string // the UsageError's
		msg       string
		helpShown bool
	}{
		{"a group alone shows its help", []string{"svid"}, "meshid svid", "svid: a command is required", true},
		{"a word the group lacks", []string{"svid", "fecth"}, "meshid svid", "unknown command \"fecth\" for \"meshid svid\"\n\nDid you mean this?\n\tfetch\n", false},
		{"an argument too many", []string{"svid", "fetch", "x"}, "meshid svid fetch", `svid fetch: unexpected argument "x"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			root, _, _ := tree(&stderr)
			root.SetArgs(tt.args)
			err := root.Execute()
			var u *UsageError
			if !errors.As(err, &u) || u.Cmd != tt.cmd || err.Error() != tt.msg || u.HelpShown != tt.helpShown {
				t.Fatalf("err = %#v, want a UsageError of %q saying %q, help shown %v", err, tt.cmd, tt.msg, tt.helpShown)
			}
			if shown := strings.Contains(stderr.String(), "Usage:\n") && strings.Contains(stderr.String(), "Available Commands:\n  fetch"); shown != tt.helpShown {
				t.Errorf("help on stderr %v, want %v:\n%s", shown, tt.helpShown, stderr.String())
			}
		})
	}
	if _, _, fetch := tree(&bytes.Buffer{}); CommandName(fetch) != "svid fetch" {
		t.Errorf("CommandName = %q", CommandName(fetch))
	}
	inner := errors.New("bad")
	var u *UsageError
	if err := Usage(&cobra.Command{Use: "x"}, inner); !errors.Is(err, inner) || !errors.As(err, &u) || u.Cmd != "x" || u.HelpShown {
		t.Errorf("Usage = %#v", err)
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, map[string]any{"a": []int{1}}); err != nil || b.String() != "{\n  \"a\": [\n    1\n  ]\n}\n" {
		t.Fatalf("%q, %v", b.String(), err)
	}
}
