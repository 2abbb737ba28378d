package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DecisionLog is authz.decision_log: the file decisions are written to,
// the collector they are shipped to, or both. In meshid.yaml it is either
// a scalar, the file alone ("stderr" or a path, as before collectors), or
// a mapping with file and service. docs/authz.md § Decision logs.
type DecisionLog struct {
	// File is "stderr", a file path, or empty for none.
	File string `yaml:"file"`
	// Service is the collector decisions are shipped to; nil for none.
	Service *DecisionLogService `yaml:"service"`
}

// DecisionLogService is a collector of decision logs written for OPA:
// events are POSTed to URL+Resource as gzipped JSON arrays in OPA's
// decision-log format.
type DecisionLogService struct {
	Service `yaml:",inline"`
	// Resource is the path POSTed to, below URL.
	Resource string `yaml:"resource"`
	// An upload is sent every MinDelay to MaxDelay (a random time in
	// between, so that nodes spread out), or as soon as a batch is full;
	// a failed one is retried after a backoff capped at MaxDelay.
	MinDelay time.Duration `yaml:"min_delay"`
	MaxDelay time.Duration `yaml:"max_delay"`
	// UploadSizeLimitBytes caps one upload's gzipped body.
	UploadSizeLimitBytes int `yaml:"upload_size_limit_bytes"`
	// BufferSizeLimitBytes bounds the events waiting to be shipped (their
	// JSON); when full, the oldest are dropped and counted.
	BufferSizeLimitBytes int64 `yaml:"buffer_size_limit_bytes"`
	// Labels are added to every event's labels, beside id and version,
	// which meshid sets.
	Labels map[string]string `yaml:"labels"`
}

// Defaults of DecisionLogService. The delays are far shorter than OPA's
// (5 to 10 minutes): a node's decisions reach the collector while an
// operator is still looking at the request. The upload limit is OPA's;
// the buffer holds about a thousand typical events.
const (
	DefaultDecisionLogResource    = "/logs"
	DefaultDecisionLogMinDelay    = time.Second
	DefaultDecisionLogMaxDelay    = 10 * time.Second
	DefaultDecisionLogUploadBytes = 32 << 10
	DefaultDecisionLogBufferBytes = 1 << 20
)

// Bounds: an upload smaller than 1 KiB holds no more than a single event;
// a delay under 100ms is a busy loop against a collector that is down.
const (
	minDecisionLogUploadBytes = 1 << 10
	minDecisionLogDelay       = 100 * time.Millisecond
)

func defaultDecisionLogService() DecisionLogService {
	return DecisionLogService{
		Service:              Service{Timeout: DefaultServiceTimeout},
		Resource:             DefaultDecisionLogResource,
		MinDelay:             DefaultDecisionLogMinDelay,
		MaxDelay:             DefaultDecisionLogMaxDelay,
		UploadSizeLimitBytes: DefaultDecisionLogUploadBytes,
		BufferSizeLimitBytes: DefaultDecisionLogBufferBytes,
	}
}

// Enabled says whether decisions are logged anywhere.
func (d DecisionLog) Enabled() bool { return d.File != "" || d.Service != nil }

// UnmarshalYAML takes the scalar form (the file) and the mapping form,
// whose service gets its defaults before its keys are read. yaml.v3 does
// not carry KnownFields into a custom unmarshaler, so unknown keys are
// looked for here, and reported as the decoder reports them.
func (d *DecisionLog) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*d = DecisionLog{}
		return n.Decode(&d.File)
	case yaml.MappingNode:
	default:
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: authz.decision_log: want stderr, a file path, or a mapping with file and service", n.Line)}}
	}
	var raw struct {
		File    string    `yaml:"file"`
		Service yaml.Node `yaml:"service"` // zero when absent
	}
	if errs := unknownKeys(n, reflect.TypeOf(DecisionLog{})); len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	if err := n.Decode(&raw); err != nil {
		return err
	}
	*d = DecisionLog{File: raw.File}
	if raw.Service.Kind == 0 || raw.Service.Tag == "!!null" {
		return nil
	}
	s := defaultDecisionLogService()
	if err := raw.Service.Decode(&s); err != nil {
		return err
	}
	d.Service = &s
	return nil
}

// unknownKeys lists, as yaml.v3 words them, the keys of the mappings in
// n that t (a struct, through pointers, inlined structs and nested
// structs) has no field for.
func unknownKeys(n *yaml.Node, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return nil
	}
	fields := map[string]reflect.Type{}
	var collect func(t reflect.Type)
	collect = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			switch {
			case opts == "inline":
				collect(f.Type)
			case name == "-":
			case name != "":
				fields[name] = f.Type
			}
		}
	}
	collect(t)
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		ft, ok := fields[k.Value]
		if !ok {
			errs = append(errs, fmt.Sprintf("line %d: field %s not found in type %s", k.Line, k.Value, t))
			continue
		}
		errs = append(errs, unknownKeys(n.Content[i+1], ft)...)
	}
	return errs
}

func (d *DecisionLog) paths() []*string {
	var ps []*string
	if d.File != "" && d.File != DecisionLogStderr {
		ps = append(ps, &d.File)
	}
	if d.Service != nil {
		ps = append(ps, d.Service.paths()...)
	}
	return ps
}

func (d DecisionLog) validate(bad func(path []any, format string, args ...any)) {
	if d.Service == nil {
		return
	}
	s := *d.Service
	path := at("authz", "decision_log", "service")
	key := func(k ...any) []any { return append(append([]any{}, path...), k...) }
	const name = "authz.decision_log.service"
	s.Service.validate(path, name, bad)
	if !strings.HasPrefix(s.Resource, "/") {
		bad(key("resource"), "%s.resource %q: want a path starting with /, as OPA's /logs", name, s.Resource)
	}
	if s.MinDelay < minDecisionLogDelay {
		bad(key("min_delay"), "%s.min_delay %s: want at least %s", name, s.MinDelay, minDecisionLogDelay)
	}
	if s.MaxDelay < s.MinDelay {
		bad(key("max_delay"), "%s.max_delay %s is shorter than min_delay %s", name, s.MaxDelay, s.MinDelay)
	}
	if s.UploadSizeLimitBytes < minDecisionLogUploadBytes {
		bad(key("upload_size_limit_bytes"), "%s.upload_size_limit_bytes %d: want at least %d", name, s.UploadSizeLimitBytes, minDecisionLogUploadBytes)
	}
	if s.BufferSizeLimitBytes < int64(s.UploadSizeLimitBytes) {
		bad(key("buffer_size_limit_bytes"), "%s.buffer_size_limit_bytes %d is less than upload_size_limit_bytes %d: the buffer must hold a batch", name, s.BufferSizeLimitBytes, s.UploadSizeLimitBytes)
	}
	for k := range s.Labels {
		switch k {
		case "":
			bad(key("labels"), "%s.labels: a label needs a name", name)
		case "id", "version":
			bad(key("labels", k), "%s.labels.%s is meshid's to set (the node, meshid's version), as OPA sets it", name, k)
		}
	}
}
