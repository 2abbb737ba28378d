// Package connlimit bounds what the callers of a Unix socket hold: how many
// connections in all and per uid (Listener), and, through the gRPC server
// options it gives, how long a connection may stay without speaking or
// without a stream (ServerOptions). It also sizes the caps from the file
// descriptor limit, so that what the callers hold leaves meshid the
// descriptors it needs for everything else (Budget).
//
// It goes by the kernel's SO_PEERCRED alone, read when a connection is
// accepted and before anything else is spent on it. It never reads what a
// caller sends and never attests: that is the transport credentials' work,
// which a refused connection never reaches.
package connlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Limits are the caps a Listener enforces, both at least 1.
type Limits struct {
	// Total is how many connections all callers together may hold.
	Total int
	// PerUID is how many one uid may hold. Root is no exception: in
	// containers without a user namespace uid 0 is shared by unrelated
	// workloads, one of which may be hostile, while root on the host,
	// who could stop meshid anyway, gains nothing from an exemption.
	PerUID int
}

// Options configure a Listener.
type Options struct {
	Limits
	// Log receives refusals, at most one line per logEvery; nil discards.
	Log *slog.Logger
	// Metrics receives the meshid_socket_* series; nil leaves them
	// unregistered.
	Metrics prometheus.Registerer
	// Clock paces the refusal log; nil is time.Now.
	Clock func() time.Time
}

// Listener is a Unix socket listener that refuses a connection, at once and
// before anything else is spent on it, when its uid already holds
// Limits.PerUID connections or all callers together hold Limits.Total. A
// connection it returns holds its place until it is closed. Serve it with
// ServerOptions, whose credentials see through its connections.
type Listener struct {
	net.Listener
	limits  Limits
	metrics metrics
	log     *refusalLog

	mu    sync.Mutex
	total int
	byUID map[uint32]int // only uids holding connections
}

// NewListener limits the connections accepted from inner, a Unix stream
// socket listener. Closing the Listener closes inner.
func NewListener(inner net.Listener, o Options) (*Listener, error) {
	if o.Total < 1 || o.PerUID < 1 {
		return nil, fmt.Errorf("connection limits must be at least 1, got %d in all and %d per uid", o.Total, o.PerUID)
	}
	m, err := newMetrics(o.Metrics, o.Limits)
	if err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clock := o.Clock
	if clock == nil {
		clock = time.Now
	}
	return &Listener{
		Listener: inner,
		limits:   o.Limits,
		metrics:  m,
		log:      newRefusalLog(log, clock),
		byUID:    map[uint32]int{},
	}, nil
}

// Accept returns the next connection within the caps. One it refuses is
// closed, counted and logged, and Accept goes on with the next: a flood
// from one uid costs a getsockopt and a close per connection, and never
// holds up the callers queued behind it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("connlimit: %s is not a Unix socket listener (accepted a %T)", l.Addr(), c)
		}
		cred, err := peerCred(uc)
		if err != nil {
			// The kernel always knows a Unix peer; a connection it
			// cannot tell about could not be attested either.
			uc.Close()
			l.refused(refusal{reason: reasonPeerCred, err: err})
			continue
		}
		if r, ok := l.take(cred); !ok {
			uc.Close()
			l.refused(r)
			continue
		}
		return &conn{UnixConn: uc, l: l, uid: cred.Uid}, nil
	}
}

// Why a connection was refused, as the reason label of
// meshid_socket_connections_refused_total.
const (
	reasonPerUID   = "per_uid"
	reasonTotal    = "total"
	reasonPeerCred = "peercred"
)

var reasons = []string{reasonPerUID, reasonTotal, reasonPeerCred}

// refusal is what the log says about a refused connection.
type refusal struct {
	reason     string
	uid, pid   int64
	held, most int // what the uid (per_uid) or everyone (total) holds, and the cap
	err        error
}

// take gives cred's uid a place, or says why there is none. The uid's own
// cap is checked first: when both are reached, that is the one to raise or
// the caller to look at.
func (l *Listener) take(cred *unix.Ucred) (refusal, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := refusal{uid: int64(cred.Uid), pid: int64(cred.Pid)}
	switch held := l.byUID[cred.Uid]; {
	case held >= l.limits.PerUID:
		r.reason, r.held, r.most = reasonPerUID, held, l.limits.PerUID
		return r, false
	case l.total >= l.limits.Total:
		r.reason, r.held, r.most = reasonTotal, l.total, l.limits.Total
		return r, false
	}
	l.byUID[cred.Uid]++
	l.total++
	l.metrics.held.Set(float64(l.total))
	return r, true
}

func (l *Listener) release(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byUID[uid]--; l.byUID[uid] <= 0 {
		delete(l.byUID, uid)
	}
	l.total--
	l.metrics.held.Set(float64(l.total))
}

func (l *Listener) refused(r refusal) {
	l.metrics.refused.WithLabelValues(r.reason).Inc()
	l.log.refused(r)
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred, nil
}

// conn is an accepted connection holding its place until it is closed. It
// is a *net.UnixConn for everything but Close; Credentials hands the
// UnixConn itself to the credentials that need one.
type conn struct {
	*net.UnixConn
	l   *Listener
	uid uint32

	mu      sync.Mutex
	closed  bool
	closeFn func() error // what the handshake made of the connection closes it all
}

// Close closes the connection, and whatever the handshake added to it
// (the attestor's pidfd), once, however many of its wrappers are closed,
// and then gives its place back.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	closeFn := c.closeFn
	c.mu.Unlock()
	if closeFn == nil {
		closeFn = c.UnixConn.Close
	}
	err := closeFn()
	c.l.release(c.uid)
	return err
}

// secured records what the handshake made of the connection, so that
// closing either closes both. A connection closed during the handshake
// closes it at once.
func (c *conn) secured(s net.Conn) error {
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.closeFn = s.Close
	}
	c.mu.Unlock()
	if closed {
		s.Close()
		return errors.New("connection closed during the handshake")
	}
	return nil
}
