package main

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/internal/buildinfo"
)

// commands is every command of meshid's tree, by its words after
// "meshid", the root first.
func commands(t *testing.T) [][]string {
	t.Helper()
	var all [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		all = append(all, path)
		for _, sub := range c.Commands() {
			walk(sub, append(slices.Clip(path), sub.Name()))
		}
	}
	walk(newRootCmd(io.Discard, io.Discard), nil)
	return all
}

// TestEveryCommandHasHelp walks the whole tree: -h, --help, -help and
// "help CMD" succeed for every command and group and print its usage on
// stdout.
func TestEveryCommandHasHelp(t *testing.T) {
	all := commands(t)
	for _, want := range [][]string{{"run"}, {"policy", "eval"}, {"svid", "watch"}, {"completion", "bash"}, {"version"}} {
		if !slices.ContainsFunc(all, func(p []string) bool { return slices.Equal(p, want) }) {
			t.Fatalf("the tree lacks %q: %q", want, all)
		}
	}
	for _, path := range all {
		for _, args := range [][]string{
			append(slices.Clip(path), "-h"),
			append(slices.Clip(path), "--help"),
			append(slices.Clip(path), "-help"),
			append([]string{"help"}, path...),
		} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				out, errOut, err := runCmd(t, args...)
				if err != nil || exitStatus(err) != 0 {
					t.Fatalf("err = %v (exit %d), stderr %q", err, exitStatus(err), errOut)
				}
				if want := "meshid " + strings.Join(path, " "); !strings.Contains(out, "Usage:\n  "+strings.TrimSpace(want)) {
					t.Fatalf("stdout lacks the usage of %q:\n%s", want, out)
				}
			})
		}
	}
}

// TestCommandsExplainThemselves: each of meshid's commands says what it
// does in a line, in a paragraph and by example.
func TestCommandsExplainThemselves(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "completion" {
			return // cobra's own
		}
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%q: Short %q, Long %q, Example %q", c.CommandPath(), c.Short, c.Long, c.Example)
		}
		for _, line := range strings.Split(c.Example, "\n") {
			if line != "" && !strings.HasPrefix(line, "  ") {
				t.Errorf("%q: example line %q is not indented as cobra prints examples", c.CommandPath(), line)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd(io.Discard, io.Discard))
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		status int
		err    []string // in the error
		stderr string   // what dispatch printed itself
	}{
		{"meshid alone", nil, 2, []string{"a command is required"}, "Workload commands"},
		{"a group alone", []string{"svid"}, 2, []string{"svid: a command is required"}, "meshid svid [command]"},
		{"an unknown command", []string{"frob"}, 2, []string{`unknown command "frob" for "meshid"`}, ""},
		{"a misspelt command", []string{"healtcheck"}, 2, []string{`unknown command "healtcheck" for "meshid"`, "Did you mean this?\n\thealthcheck"}, ""},
		{"a misspelt subcommand", []string{"svid", "fecth"}, 2, []string{`unknown command "fecth" for "meshid svid"`, "Did you mean this?\n\tfetch"}, ""},
		{"an unknown flag", []string{"svid", "fetch", "--sokcet", "/x"}, 2, []string{"unknown flag: --sokcet", "Did you mean this?\n\t--socket"}, ""},
		{"a misspelt single-dash flag", []string{"svid", "fetch", "-sokcet", "/x"}, 2, []string{"unknown shorthand flag: 's' in -sokcet", "Did you mean this?\n\t--socket"}, ""},
		{"a flag of another command", []string{"svid", "fetch", "--audience", "a"}, 2, []string{"unknown flag: --audience"}, ""},
		{"a flag without its value", []string{"policy", "eval", "-i"}, 2, []string{"flag needs an argument: 'i' in -i"}, ""},
		{"a value of the wrong type", []string{"healthcheck", "--timeout", "soon"}, 2, []string{`invalid argument "soon" for "--timeout" flag`}, ""},
		{"an argument too many", []string{"healthcheck", "extra"}, 2, []string{`healthcheck: unexpected argument "extra"`}, ""},
		{"a required flag missing", []string{"jwt", "fetch"}, 2, []string{"jwt fetch: -audience is required"}, ""},
		{"a choice not offered", []string{"bundle", "show", "--format", "der"}, 2, []string{`bundle show: -format "der": want pem or spiffe`}, ""},
		{"help for nothing", []string{"help", "frob"}, 2, []string{`unknown command "frob" for "meshid"`}, ""},
		{"help for a misspelt subcommand", []string{"help", "svid", "wathc"}, 2, []string{`no help for "svid wathc": "meshid svid" has no command "wathc"`, "Did you mean this?\n\twatch"}, ""},
		{"a runtime failure is not one", []string{"policy", "check", "/nonexistent"}, 1, []string{"no such file or directory"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := runCmd(t, tt.args...)
			if got := exitStatus(err); got != tt.status {
				t.Fatalf("exit %d (%v), want %d", got, err, tt.status)
			}
			for _, w := range tt.err {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, stderr)
			}
		})
	}
}

func TestReport(t *testing.T) {
	root := newRootCmd(io.Discard, io.Discard)
	fetch, _, _ := root.Find([]string{"svid", "fetch"})
	tests := []struct {
		name   string
		err    error
		status int
		want   string
	}{
		{"success", nil, 0, ""},
		{"a failure", errors.New("unhealthy"), 1, "meshid: unhealthy\n"},
		{"a usage error points at the help", cli.Usagef(fetch, "svid fetch: unexpected argument %q", "x"), 2,
			"meshid: svid fetch: unexpected argument \"x\"\nRun 'meshid svid fetch --help' for usage.\n"},
		{"after the help, only the reason", cli.NeedsCommand(root, nil), 2, "meshid: a command is required\n"},
		{"the program's status is its own", cli.ExitCode(3), 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w bytes.Buffer
			report(&w, tt.err)
			if w.String() != tt.want || exitStatus(tt.err) != tt.status {
				t.Fatalf("report %q, exit %d; want %q, %d", w.String(), exitStatus(tt.err), tt.want, tt.status)
			}
		})
	}
}

// TestVersion: --version and "meshid version" print the same lines.
func TestVersion(t *testing.T) {
	want := buildinfo.Read().String()
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}, {"-v"}} {
		out, _, err := runCmd(t, args...)
		if err != nil || out != want || !strings.HasPrefix(out, "meshid ") || !strings.Contains(out, runtime.Version()) {
			t.Errorf("meshid %v: %q, %v", args, out, err)
		}
	}
}

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "# bash completion V2 for meshid",
		"zsh":  "#compdef meshid",
		"fish": "# fish completion for meshid",
	} {
		out, _, err := runCmd(t, "completion", shell)
		if err != nil || !strings.Contains(out, want) || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: %v\n%.300s", shell, err, out)
		}
	}
	// What the scripts ask meshid: commands, flags and their values.
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"svid", "f"}, []string{"fetch"}},
		{[]string{"bundle", "show", "--format", ""}, []string{"pem", "spiffe"}},
		{[]string{"policy", "eval", "--rego-version", ""}, []string{"v1", "v0"}},
		{[]string{"svid", "fetch", "--so"}, []string{"--socket"}},
	} {
		out, _, err := runCmd(t, append([]string{cobra.ShellCompNoDescRequestCmd}, tt.args...)...)
		for _, w := range tt.want {
			if err != nil || !slices.Contains(strings.Split(out, "\n"), w) {
				t.Errorf("completing %q: %v, want %q in\n%s", tt.args, err, w, out)
			}
		}
	}
}

// TestLongFlags: single-dash long flags are pflag's double-dash ones, and
// nothing else is touched.
func TestLongFlags(t *testing.T) {
	tests := []struct {
		name string
		cmd  []string // the command, found as dispatch finds it
		args string
		want string
	}{
		{"long flags", []string{"run"}, "run -config m.yaml", "run --config m.yaml"},
		{"with =", []string{"svid", "fetch"}, "svid fetch -write=/d -json", "svid fetch --write=/d --json"},
		{"double dash stays", []string{"svid", "fetch"}, "svid fetch --write /d", "svid fetch --write /d"},
		{"shorthands stay", []string{"policy", "test"}, "policy test -v DIR", "policy test -v DIR"},
		{"a shorthand's value is a value", []string{"policy", "eval"}, "policy eval -i -json -d -show-input", "policy eval -i -json -d -show-input"},
		{"a cluster ending in a value", []string{"policy", "eval"}, "policy eval -id x", "policy eval -id x"},
		{"a long flag's value is a value", []string{"envoy", "bootstrap"}, "envoy bootstrap -node -delta", "envoy bootstrap --node -delta"},
		{"an alias", []string{"policy", "eval"}, "policy eval -policy DIR", "policy eval --policy DIR"},
		{"help", []string{"svid"}, "svid -help", "svid --help"},
		{"version", nil, "-version", "--version"},
		{"another command's flag is left to pflag", []string{"svid", "fetch"}, "svid fetch -audience a", "svid fetch -audience a"},
		{"nothing after --", []string{"svid", "watch"}, "svid watch -write /d -- prog -json -write", "svid watch --write /d -- prog -json -write"},
		{"-cmd ends the flags", []string{"svid", "watch"}, "svid watch -write /d -cmd sh -c -write", "svid watch --write /d -- sh -c -write"},
		{"--cmd too", []string{"svid", "watch"}, "svid watch --cmd sh -h", "svid watch -- sh -h"},
		{"flags after arguments", []string{"jwt", "validate"}, "jwt validate TOKEN -audience a", "jwt validate TOKEN --audience a"},
		{"a lone dash is an argument", []string{"policy", "eval"}, "policy eval -input -", "policy eval --input -"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, _, err := newRootCmd(io.Discard, io.Discard).Find(tt.cmd)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(longFlags(cmd, strings.Fields(tt.args)), " "); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestSingleDashFlagsRun runs commands the way scripts and the end-to-end
// tests type them.
func TestSingleDashFlagsRun(t *testing.T) {
	for _, args := range [][]string{
		{"envoy", "bootstrap", "-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "127.0.0.1:8443", "-peer-id", "spiffe://example.org/api", "-delta"},
		{"envoy", "bootstrap", "--spiffe-id=spiffe://example.org/web", "--outbound=127.0.0.1:15001", "--peer", "127.0.0.1:8443", "--peer-id", "spiffe://example.org/api", "--delta"},
		{"envoy", "bootstrap", "-spiffe-id=spiffe://example.org/web", "-outbound=127.0.0.1:15001", "-peer=127.0.0.1:8443", "-peer-id=spiffe://example.org/api", "-delta=true"},
	} {
		out, _, err := runCmd(t, args...)
		if err != nil || !strings.Contains(out, "api_type: DELTA_GRPC") {
			t.Errorf("%q: %v\n%s", args, err, out)
		}
	}
}
