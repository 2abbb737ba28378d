package decisionlog

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshid/meshid/internal/atomicfile"
)

// PolicySet is the policy set a decision was reached with, as the log
// keeps it so that the decision can be replayed: every file the engine
// read, by its path relative to the policy dir, and the Rego version they
// were parsed as. Its Revision is a content hash of both, so two engines
// compiled from the same files share one.
type PolicySet struct {
	Revision    string
	Dir         string            // the policy dir it was read from
	RegoVersion string            // "v1" or "v0"
	Files       map[string][]byte // by slash-separated path relative to Dir
	// Bundles names the revision (its manifest's) of each OPA bundle
	// compiled into the set, by bundle name; nil when there are none.
	// Decision log events carry it as OPA's "bundles" field.
	Bundles map[string]string
}

// NewPolicySet names the policy set read from dir by its revision.
func NewPolicySet(dir, regoVersion string, files map[string][]byte) *PolicySet {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	h := sha256.New()
	fmt.Fprintf(h, "meshid policy revision 1\nrego %s\n", regoVersion)
	for _, name := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(files[name]))
		h.Write(files[name])
	}
	// 128 bits: a name for content meshid wrote itself, not a defence
	// against someone who can write the policy dir.
	return &PolicySet{Revision: hex.EncodeToString(h.Sum(nil)[:16]), Dir: dir, RegoVersion: regoVersion, Files: files}
}

// Revisions keeps the policy sets decisions were logged with, one
// directory each, DIR/<revision>/: revision.json (where it was read from,
// its Rego version), files/ (the policy files as they were) and
// last_logged (when a decision log line last started referring to it).
// Directories are 0700 and files 0600; a revision appears whole (it is
// written aside and renamed into place) or not at all.
//
// A revision is kept while a retained decision log file may refer to it,
// which is when it was last logged no earlier than the first line of the
// oldest retained file: see Prune.
type Revisions struct {
	dir string
}

// Files of a kept revision.
const (
	revisionManifest = "revision.json"
	revisionFiles    = "files"
	revisionLogged   = "last_logged"
)

// ErrRevisionNotKept is a revision that is not (or no longer) in the store.
var ErrRevisionNotKept = errors.New("policy revision not kept")

// NewRevisions is the store in dir, which the first Keep creates (0700).
func NewRevisions(dir string) *Revisions { return &Revisions{dir: dir} }

// Dir is where the revisions are.
func (s *Revisions) Dir() string { return s.dir }

type manifest struct {
	Revision    string   `json:"revision"`
	Dir         string   `json:"policy_dir"`
	RegoVersion string   `json:"rego_version"`
	Files       []string `json:"files"`
}

// Keep stores p unless it is already kept, and records that a decision
// log line referring to it was written at logged.
func (s *Revisions) Keep(p *PolicySet, logged time.Time) error {
	if !validRevision(p.Revision) {
		return fmt.Errorf("policy revision %q: not a revision", p.Revision)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("policy revisions: %w", err)
	}
	at := filepath.Join(s.dir, p.Revision)
	if _, err := os.Stat(filepath.Join(at, revisionManifest)); errors.Is(err, fs.ErrNotExist) {
		if err := s.write(p); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("policy revision %s: %w", p.Revision, err)
	}
	return atomicfile.Write(filepath.Join(at, revisionLogged), []byte(logged.UTC().Format(time.RFC3339Nano)+"\n"), 0o600)
}

// write puts p's files in a directory of their own beside the store's
// and renames it into place.
func (s *Revisions) write(p *PolicySet) (err error) {
	var suffix [6]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(s.dir, ".new-"+p.Revision+"-"+hex.EncodeToString(suffix[:]))
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	m := manifest{Revision: p.Revision, Dir: p.Dir, RegoVersion: p.RegoVersion}
	for name, data := range p.Files {
		path := filepath.Join(tmp, revisionFiles, filepath.FromSlash(name))
		if !filepath.IsLocal(filepath.FromSlash(name)) {
			return fmt.Errorf("policy revision %s: file name %q is not inside the policy dir", p.Revision, name)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("policy revision %s: %w", p.Revision, err)
		}
		if err := atomicfile.Write(path, data, 0o600); err != nil {
			return fmt.Errorf("policy revision %s: %w", p.Revision, err)
		}
		m.Files = append(m.Files, name)
	}
	slices.Sort(m.Files)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(tmp, revisionManifest), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("policy revision %s: %w", p.Revision, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, p.Revision)); err != nil {
		return fmt.Errorf("policy revision %s: %w", p.Revision, err)
	}
	return atomicfile.SyncDir(s.dir)
}

// Kept is a revision as the store has it.
type Kept struct {
	Revision    string
	PolicyDir   string // the policy dir it was read from
	RegoVersion string
	// FilesDir holds the policy files as they were, under the same
	// relative paths as in PolicyDir.
	FilesDir   string
	LastLogged time.Time
}

// Load finds a kept revision; ErrRevisionNotKept when the store has none
// by that name.
func (s *Revisions) Load(revision string) (*Kept, error) {
	if !validRevision(revision) {
		return nil, fmt.Errorf("policy revision %q: not a revision (32 hex digits)", revision)
	}
	at := filepath.Join(s.dir, revision)
	b, err := os.ReadFile(filepath.Join(at, revisionManifest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is not in %s", ErrRevisionNotKept, revision, s.dir)
	}
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(at, revisionManifest), err)
	}
	k := &Kept{Revision: revision, PolicyDir: m.Dir, RegoVersion: m.RegoVersion, FilesDir: filepath.Join(at, revisionFiles)}
	k.LastLogged, _ = readLogged(at)
	return k, nil
}

func readLogged(at string) (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(at, revisionLogged))
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
}

// Prune removes every revision last logged before oldest, the time of
// the first line of the oldest decision log file still kept: no kept
// file can refer to it. A revision that says nothing of when it was
// logged (a write cut short) is removed as well, and so are revisions
// half-written by a meshid that stopped. It returns the revisions
// removed.
func (s *Revisions) Prune(oldest time.Time) ([]string, error) {
	return s.prune(func(_ string, logged time.Time) bool { return logged.Before(oldest) })
}

// PruneTo keeps the n revisions logged most recently and removes the
// others: for a decision log meshid does not rotate (stderr), whose
// retained lines it cannot see.
func (s *Revisions) PruneTo(n int) ([]string, error) {
	type rev struct {
		name   string
		logged time.Time
	}
	var revs []rev
	if _, err := s.prune(func(name string, logged time.Time) bool {
		revs = append(revs, rev{name, logged})
		return false
	}); err != nil {
		return nil, err
	}
	if len(revs) <= n {
		return nil, nil
	}
	slices.SortFunc(revs, func(a, b rev) int { return b.logged.Compare(a.logged) })
	drop := map[string]bool{}
	for _, r := range revs[n:] {
		drop[r.name] = true
	}
	return s.prune(func(name string, _ time.Time) bool { return drop[name] })
}

func (s *Revisions) prune(remove func(name string, logged time.Time) bool) ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("policy revisions: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		at := filepath.Join(s.dir, name)
		if strings.HasPrefix(name, ".new-") {
			errs = append(errs, os.RemoveAll(at))
			continue
		}
		if !e.IsDir() || !validRevision(name) {
			continue
		}
		logged, err := readLogged(at)
		if err == nil && !remove(name, logged) {
			continue
		}
		if err := os.RemoveAll(at); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

func validRevision(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// FirstLineTime is the timestamp of the first line of the decision log
// file at path; false when the file is missing, empty or its first line
// has none.
func FirstLineTime(path string) (time.Time, bool) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	r := bufio.NewReader(f)
	// The timestamp is the second field of every line meshid writes, well
	// within its first bytes; a line is read only that far.
	head, _ := r.Peek(256)
	i := strings.Index(string(head), `"timestamp":"`)
	if i < 0 {
		return time.Time{}, false
	}
	rest := string(head[i+len(`"timestamp":"`):])
	end := strings.IndexByte(rest, '"')
	if end < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, rest[:end])
	return t, err == nil
}

// RotatedPath is the path of the n-th rotated file of the decision log at
// path (0: path itself).
func RotatedPath(path string, n int) string {
	if n == 0 {
		return path
	}
	return path + "." + strconv.Itoa(n)
}
