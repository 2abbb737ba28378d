package connlimit

import (
	"fmt"
	"syscall"
)

// The file descriptor budget. A connection costs meshid two descriptors:
// its socket and the pidfd the attestor holds on the caller while it is
// open. Whatever the callers may hold, meshid keeps a reserve for the rest
// of its work: writing a CA generation, reloading entries and policies,
// ext_authz and admin connections, the Docker and kubelet clients, logs.
//
//	reserve             = min(1024, nofile/4)
//	connections         = min(8192, (nofile - reserve) / 2)
//	connections_per_uid = max(1, connections / 8)
//
// where nofile is RLIMIT_NOFILE once raised to its hard limit. The cap of
// 8192 bounds memory (each connection holds gRPC's read and write buffers,
// some 64 KiB) however high the descriptor limit; the eighth per uid lets
// hundreds of workloads share a uid while no single uid can starve the
// others.
const (
	FDsPerConn      = 2
	maxReserve      = 1024
	reserveDivisor  = 4
	maxDerivedTotal = 8192
	perUIDDivisor   = 8
)

// reserve is how many of nofile descriptors no connection may take.
func reserve(nofile uint64) uint64 { return min(maxReserve, nofile/reserveDivisor) }

// TCPCap is how many connections each of meshid's ext_authz listeners may
// hold: configured where not 0, else a quarter of the reserve. TCP tells
// nothing of the peer's uid, so these connections cannot be capped per
// caller; capping them in all keeps them, the two ext_authz listeners and
// the admin endpoint (AdminCap) together, within half the reserve, so that
// no local user can take the descriptors meshid keeps for its own work
// through them. A listener at its cap stops accepting until one of its
// connections closes; the others wait in the kernel's backlog.
func TCPCap(nofile uint64, configured int) int {
	if configured > 0 {
		return configured
	}
	return max(1, int(reserve(nofile)/4))
}

// AdminCap is how many connections the admin endpoint may hold: probes and
// Prometheus need a few.
const AdminCap = 32

// Budget returns the caps for a process that may open nofile descriptors:
// those configured, where not 0, else those derived from nofile. A
// configured cap that the descriptors cannot back, or a per-uid cap above
// the total, is an error saying what to change.
func Budget(nofile uint64, configured Limits) (Limits, error) {
	if configured.Total < 0 || configured.PerUID < 0 {
		return Limits{}, fmt.Errorf("connection limits must not be negative, got %d in all and %d per uid", configured.Total, configured.PerUID)
	}
	kept := reserve(nofile)
	fit := (nofile - kept) / FDsPerConn
	l := configured
	if l.Total == 0 {
		l.Total = int(min(maxDerivedTotal, fit))
		if l.Total < 1 {
			return Limits{}, fmt.Errorf("a file descriptor limit of %d leaves no room for a single connection; raise RLIMIT_NOFILE", nofile)
		}
	} else if uint64(l.Total) > fit {
		return Limits{}, fmt.Errorf("%d connections need %d file descriptors (%d each, and %d kept for meshid's own work) but RLIMIT_NOFILE is %d: raise it (LimitNOFILE= in systemd, ulimit -Hn) or allow at most %d connections",
			l.Total, uint64(l.Total)*FDsPerConn+kept, FDsPerConn, kept, nofile, fit)
	}
	if l.PerUID == 0 {
		l.PerUID = max(1, l.Total/perUIDDivisor)
	} else if l.PerUID > l.Total {
		return Limits{}, fmt.Errorf("%d connections per uid is more than the %d in all: one uid could take every connection; lower it", l.PerUID, l.Total)
	}
	return l, nil
}

// RaiseFDLimit lifts the soft RLIMIT_NOFILE to the hard limit and returns
// the soft limit then in force, which is what Budget is to be given. The
// Go runtime already does this when a program starts (Go 1.19), so this
// is a check more than a change; on an error the limit returned is the one
// in force, still usable.
func RaiseFDLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur >= lim.Max {
		return lim.Cur, nil
	}
	soft := lim.Cur
	lim.Cur = lim.Max
	// syscall's Setrlimit, not x/sys's: it also tells the runtime not to
	// restore the old limit in processes meshid starts.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return soft, fmt.Errorf("raise RLIMIT_NOFILE from %d to its hard limit %d: %w", soft, lim.Max, err)
	}
	return lim.Cur, nil
}
