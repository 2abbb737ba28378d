package authz

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"
)

// CacheOptions bound the decision cache (docs/authz.md, "Decision cache").
// The zero value is no cache.
type CacheOptions struct {
	Enabled bool
	// MaxEntries bounds the decisions kept; 0 is no bound by count.
	MaxEntries int
	// MaxBytes bounds their estimated memory; 0 is no bound by size.
	MaxBytes int64
}

// cachedDecision is what a decision leaves in the cache: the policy's
// value and the CheckResponse it maps to, without a decision id. Both are
// shared by every request that hits it and never changed: a hit's
// response is a copy of the top of it with that request's own decision id
// (response.WithDecisionID).
type cachedDecision struct {
	decision ast.Value
	resp     *authv3.CheckResponse
	allowed  bool
}

// cacheShards spreads the lock of the cache: each shard is an LRU of its
// own, holding a shard's share of the bounds.
const cacheShards = 8

// decisionCache is a bounded LRU of decisions by cache key (appendKey) for
// one policy set: a new policy set gets a new cache, so nothing decided by
// the old one is ever answered by the new.
type decisionCache struct {
	seed    maphash.Seed
	shards  [cacheShards]cacheShard
	entries atomic.Int64
}

type cacheShard struct {
	mu         sync.Mutex
	m          map[string]*cacheEntry
	lru        cacheEntry // sentinel: lru.next is the most recently used
	bytes      int64
	maxEntries int
	maxBytes   int64
}

type cacheEntry struct {
	key        string
	val        cachedDecision
	size       int64
	prev, next *cacheEntry
}

// newDecisionCache is nil (no cache) unless o enables one.
func newDecisionCache(o CacheOptions) *decisionCache {
	if !o.Enabled {
		return nil
	}
	c := &decisionCache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		s := &c.shards[i]
		s.m = map[string]*cacheEntry{}
		s.lru.next, s.lru.prev = &s.lru, &s.lru
		s.maxEntries = ceilDiv(o.MaxEntries, cacheShards)
		s.maxBytes = int64(ceilDiv(int(o.MaxBytes), cacheShards))
	}
	return c
}

func ceilDiv(n, d int) int { return (n + d - 1) / d }

func (c *decisionCache) shard(key []byte) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, key)%cacheShards]
}

// get returns the decision cached under key. The map compares whole keys:
// two inputs share an entry only when their keys are equal byte for byte.
func (c *decisionCache) get(key []byte) (cachedDecision, bool) {
	s := c.shard(key)
	s.mu.Lock()
	e, ok := s.m[string(key)]
	if ok {
		s.unlink(e)
		s.pushFront(e)
	}
	s.mu.Unlock()
	if !ok {
		return cachedDecision{}, false
	}
	return e.val, true
}

// put caches val under key, evicting the least recently used decisions
// past the bounds. A decision larger than a shard's share of MaxBytes is
// not kept.
func (c *decisionCache) put(key []byte, val cachedDecision) {
	size := entrySize(key, val)
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxBytes > 0 && size > s.maxBytes {
		return
	}
	if old, ok := s.m[string(key)]; ok {
		s.remove(old)
		c.entries.Add(-1)
	}
	e := &cacheEntry{key: string(key), val: val, size: size}
	s.m[e.key] = e
	s.pushFront(e)
	s.bytes += size
	c.entries.Add(1)
	for (s.maxEntries > 0 && len(s.m) > s.maxEntries) || (s.maxBytes > 0 && s.bytes > s.maxBytes) {
		s.remove(s.lru.prev)
		c.entries.Add(-1)
	}
}

// len is the number of decisions cached.
func (c *decisionCache) len() int { return int(c.entries.Load()) }

func (s *cacheShard) pushFront(e *cacheEntry) {
	e.prev, e.next = &s.lru, s.lru.next
	s.lru.next.prev = e
	s.lru.next = e
}

func (s *cacheShard) unlink(e *cacheEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (s *cacheShard) remove(e *cacheEntry) {
	s.unlink(e)
	delete(s.m, e.key)
	s.bytes -= e.size
}

// entryOverhead is about what an entry costs besides its key, response
// and decision: the entry, its map slot, the terms' and messages' headers.
const entryOverhead = 256

// entrySize estimates the memory an entry holds: its key twice (the map's
// and the entry's share one string, but the map slot has its own header),
// the response's wire size twice (Go's messages are larger than their
// encoding) and the decision's text.
func entrySize(key []byte, val cachedDecision) int64 {
	n := entryOverhead + len(key) + 2*proto.Size(val.resp)
	if obj, ok := val.decision.(ast.Object); ok {
		n += 2 * len(obj.String())
	}
	return int64(n)
}
