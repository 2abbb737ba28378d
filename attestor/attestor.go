package attestor

import (
	"context"
	"errors"
	"fmt"
)

// Reasons an attestation fails, as they appear in the
// meshid_attestation_failures_total{reason} metric.
const (
	ReasonExited             = "process_exited"      // the caller exited before or while it was attested
	ReasonPIDReused          = "pid_reused"          // its pid names another process now
	ReasonCredentialsChanged = "credentials_changed" // it runs under another uid or gid than it connected with
	ReasonProcfs             = "procfs"              // procfs could not be read
	ReasonDocker             = "docker"              // the Docker Engine API failed
	ReasonKubelet            = "kubelet"             // the kubelet failed or does not list the pod
	ReasonOther              = "other"
)

// Reasons lists every reason an attestation can fail with, so that its
// metric can show each at 0 before the first failure.
func Reasons() []string {
	return []string{ReasonExited, ReasonPIDReused, ReasonCredentialsChanged, ReasonProcfs, ReasonDocker, ReasonKubelet, ReasonOther}
}

// Error is a failed attestation with a reason short enough for a metric
// label. The caller gets no selectors from an attestation that failed: an
// identity is never guessed from part of the facts.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Reason returns the reason of a failed attestation, ReasonOther when err
// does not say.
func Reason(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Reason
	}
	return ReasonOther
}

// plugin produces one kind of selectors (unix, docker, k8s) for a process.
// A plugin that finds the process is not its kind (not in a container)
// returns no selectors and no error.
type plugin interface {
	attest(ctx context.Context, p *Process) ([]Selector, error)
}

// Options configures New.
type Options struct {
	// ProcDir is where procfs is mounted; empty means /proc. Tests point it
	// at a fake one.
	ProcDir string
	// SHA256 adds unix:sha256 (the executable's digest). It costs reading
	// the executable, once per inode and modification time.
	SHA256 bool
	// Docker, when set, adds docker selectors.
	Docker *DockerOptions
	// K8s, when set, adds k8s selectors.
	K8s *K8sOptions
}

// Attestor turns a caller into selectors with every configured plugin and
// trusts the result only once the process is known to be the one that
// connected.
type Attestor struct {
	procDir string
	plugins []plugin
}

// New returns an Attestor with the unix plugin and whichever of docker and
// k8s the options enable.
func New(o Options) (*Attestor, error) {
	if o.ProcDir == "" {
		o.ProcDir = defaultProcDir
	}
	a := &Attestor{procDir: o.ProcDir}
	a.plugins = append(a.plugins, newUnix(o.SHA256))
	if o.Docker != nil {
		d, err := newDocker(*o.Docker)
		if err != nil {
			return nil, err
		}
		a.plugins = append(a.plugins, d)
	}
	if o.K8s != nil {
		k, err := newK8s(*o.K8s)
		if err != nil {
			return nil, err
		}
		a.plugins = append(a.plugins, k)
	}
	return a, nil
}

// Attest returns the caller's selectors. The process handle taken when the
// caller connected is checked after every plugin has run: if the process
// died or its pid was reused meanwhile, the selectors may describe another
// process, so the attestation fails. A Caller made by hand (no handle)
// gets one opened here, by pid.
func (a *Attestor) Attest(ctx context.Context, c Caller) ([]Selector, error) {
	if c.procErr != nil {
		return nil, c.procErr
	}
	p := c.proc
	if p == nil {
		var err error
		if p, err = openProcess(a.procDir, c, -1); err != nil {
			return nil, err
		}
		defer p.Close()
	}
	var sels []Selector
	for _, pl := range a.plugins {
		s, err := pl.attest(ctx, p)
		if err != nil {
			// A plugin failing because the process went away is reported
			// as that, not as the plugin's own failure.
			if verr := p.Verify(); verr != nil {
				return nil, verr
			}
			return nil, err
		}
		sels = append(sels, s...)
	}
	if err := p.Verify(); err != nil {
		return nil, err
	}
	return sels, nil
}

// LookupCaller describes a process by pid, as the kernel would have on a
// connection from it: its effective uid and gid. It is for explaining what
// meshid sees of a process that has not connected.
func LookupCaller(pid int32) (Caller, error) {
	if pid <= 0 {
		return Caller{}, fmt.Errorf("pid %d: want a positive pid", pid)
	}
	p := &Process{PID: pid, procDir: defaultProcDir}
	st, err := p.status()
	if err != nil {
		return Caller{}, err
	}
	return Caller{PID: pid, UID: st.uid[1], GID: st.gid[1]}, nil
}
