package decisionlog

import (
	"io"
	"time"
)

// revisionKeeper keeps the revision of every line Run writes and prunes
// the ones no kept line refers to. A revision is marked as logged (its
// last_logged set to now) when the first line of a file refers to it,
// and again for the lines of a batch during which the file rotated, so
// its mark is never earlier than the first line of the newest file that
// refers to it: pruning what was marked before the oldest file's first
// line never takes a revision a kept line names.
type revisionKeeper struct {
	d         *Log
	rot       Rotating // nil: out does not rotate
	rotations uint64
	current   map[string]bool       // marked since the current file began
	batch     map[string]*PolicySet // named by the lines of the batch being written
}

func (d *Log) newRevisionKeeper(out io.Writer) *revisionKeeper {
	k := &revisionKeeper{d: d, current: map[string]bool{}, batch: map[string]*PolicySet{}}
	if d.revs == nil {
		return k
	}
	if rot, ok := out.(Rotating); ok {
		k.rot, k.rotations = rot, rot.Rotations()
		k.prune()
		return k
	}
	removed, err := d.revs.PruneTo(d.keepRevs)
	k.pruned(removed, err)
	return k
}

// logging is called before a line naming p is written.
func (k *revisionKeeper) logging(p *PolicySet) {
	if k.d.revs == nil || p == nil {
		return
	}
	k.batch[p.Revision] = p
	if !k.current[p.Revision] {
		k.keep(p)
	}
}

// flushed is called after a batch of lines was written.
func (k *revisionKeeper) flushed() {
	if k.rot != nil && k.rot.Rotations() != k.rotations {
		k.rotations = k.rot.Rotations()
		clear(k.current)
		for _, p := range k.batch {
			k.keep(p)
		}
		k.prune()
	}
	clear(k.batch)
}

func (k *revisionKeeper) keep(p *PolicySet) {
	// Marked even when keeping failed: it is tried again at the next
	// rotation, not for every line.
	k.current[p.Revision] = true
	if err := k.d.revs.Keep(p, time.Now()); err != nil {
		k.d.log.Error("authz: cannot keep the policy revision of logged decisions; meshid policy why cannot replay them", "revision", p.Revision, "err", err)
	}
}

func (k *revisionKeeper) prune() {
	if oldest, ok := k.rot.OldestLine(); ok {
		k.pruned(k.d.revs.Prune(oldest))
	}
}

func (k *revisionKeeper) pruned(removed []string, err error) {
	if err != nil {
		k.d.log.Warn("authz: pruning policy revisions", "dir", k.d.revs.Dir(), "err", err)
	}
	if len(removed) > 0 {
		k.d.log.Info("authz: pruned policy revisions no kept decision log refers to", "dir", k.d.revs.Dir(), "revisions", removed)
	}
}
