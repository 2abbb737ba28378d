package config

import "time"

// Limits bounds what callers of socket_path may hold and for how long, so
// that no local user can take the file descriptors meshid needs to serve
// the others, write the CA and reload its inputs (issue 13).
type Limits struct {
	// Connections is how many connections every caller together may hold
	// at once; 0 derives it from the file descriptor limit at start
	// (docs/operations.md, "Limits").
	Connections int `yaml:"connections"`
	// ConnectionsPerUID is how many of them one uid, root included, may
	// hold; 0 derives it from Connections.
	ConnectionsPerUID int `yaml:"connections_per_uid"`
	// HandshakeTimeout closes a connection that has not sent its HTTP/2
	// preface this long after it was accepted.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes a connection that has had no open stream (RPC)
	// for this long. SDS and Workload API watches are streams, so their
	// connections are never idle. The ext_authz listeners use it too.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// AuthzConnections is how many connections each ext_authz listener
	// (authz.address, authz.http_address) may hold; 0 derives it from the
	// file descriptor limit at start.
	AuthzConnections int `yaml:"authz_connections"`
}

// minLimitTimeout keeps a timeout from dropping healthy callers of a busy
// node: a local client sends its preface at once, but a loaded machine
// may not run meshid for a while.
const minLimitTimeout = time.Second

func defaultLimits() Limits {
	return Limits{HandshakeTimeout: 5 * time.Second, IdleTimeout: 5 * time.Minute}
}

func (l Limits) validate(bad func(path []any, format string, args ...any)) {
	for _, f := range []struct {
		key string
		val int
	}{{"connections", l.Connections}, {"connections_per_uid", l.ConnectionsPerUID}, {"authz_connections", l.AuthzConnections}} {
		if f.val < 0 {
			bad(at("limits", f.key), "limits.%s %d must not be negative (0 or absent: derived from the file descriptor limit)", f.key, f.val)
		}
	}
	if l.Connections > 0 && l.ConnectionsPerUID > l.Connections {
		bad(at("limits", "connections_per_uid"), "limits.connections_per_uid %d is more than limits.connections %d: one uid could take every connection; lower it", l.ConnectionsPerUID, l.Connections)
	}
	for _, f := range []struct {
		key string
		val time.Duration
	}{{"handshake_timeout", l.HandshakeTimeout}, {"idle_timeout", l.IdleTimeout}} {
		if f.val < minLimitTimeout {
			bad(at("limits", f.key), "limits.%s %s is shorter than the minimum %s", f.key, f.val, minLimitTimeout)
		}
	}
}
