// Command loadgen is the reliability suite's client: the load a scenario
// measures comes from this separate process, built without the race
// detector, so that the figures are about meshid and not about an
// instrumented client, and so that a scenario can run it under a uid of
// its choosing (the kernel attests the process that connects).
//
// Each mode sends a bounded amount of work and prints one line
// "result {JSON}" (Result), which the suite parses:
//
//	loadgen authz -addr A -checks N -c C      ext_authz checks, C at a time
//	loadgen sds -socket S -streams N          SDS streams held open at once, each on its own connection
//	loadgen fetch -socket S -n N              one connection and one FetchSecrets after another
//	loadgen flood -socket S -conns N -for D   connections that never speak, held and reopened
//	loadgen handoff -socket S -to T           a connection to meshid passed to another process
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Result is what every mode prints. Latencies are in nanoseconds, in the
// order the operations ended.
type Result struct {
	Mode string `json:"mode"`
	// Ops is how many operations succeeded; Errors how many failed.
	Ops        int    `json:"ops"`
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// WallNS is the time the measured operations took in all.
	WallNS int64   `json:"wall_ns"`
	LatNS  []int64 `json:"lat_ns,omitempty"`
	// PushAtNS (sds) are the Unix times at which each stream received the
	// push after its first response, for the suite to compare with the
	// time it caused it.
	PushAtNS []int64 `json:"push_at_ns,omitempty"`
	// Peak (flood) is the most connections held open at once; Closed how
	// many of them meshid closed or refused.
	Peak   int `json:"peak,omitempty"`
	Closed int `json:"closed,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen authz|sds|fetch|flood [flags]")
		os.Exit(2)
	}
	modes := map[string]func(context.Context, []string, io.Writer) (Result, error){
		"authz":   authz,
		"sds":     sds,
		"fetch":   fetch,
		"flood":   flood,
		"handoff": handoff,
	}
	run, ok := modes[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "loadgen: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
	res, err := run(context.Background(), os.Args[2:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	res.Mode = os.Args[1]
	if err := printLine(os.Stdout, "result", res); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// printLine writes "tag {JSON}" on one line.
func printLine(w io.Writer, tag string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s %s\n", tag, b)
	return err
}

// flags parses a mode's flags, exiting with status 2 on a bad one.
func flags(name string, args []string, define func(*flag.FlagSet)) {
	fs := flag.NewFlagSet("loadgen "+name, flag.ExitOnError)
	define(fs)
	_ = fs.Parse(args)
}

// tally gathers the outcome of operations run by many goroutines.
type tally struct {
	lat   []int64
	errs  int
	first error
}

func (t *tally) add(took time.Duration, err error) {
	if err != nil {
		t.errs++
		if t.first == nil {
			t.first = err
		}
		return
	}
	t.lat = append(t.lat, took.Nanoseconds())
}

func (t *tally) merge(o *tally) {
	t.lat = append(t.lat, o.lat...)
	t.errs += o.errs
	if t.first == nil {
		t.first = o.first
	}
}

func (t *tally) result(wall time.Duration) Result {
	r := Result{Ops: len(t.lat), Errors: t.errs, WallNS: wall.Nanoseconds(), LatNS: t.lat}
	if t.first != nil {
		r.FirstError = strings.SplitN(t.first.Error(), "\n", 2)[0]
	}
	return r
}
