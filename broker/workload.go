package broker

// Workload identities (source workload-oidc): a profile whose identity
// comes from the caller. Each request carries the workload's own OIDC
// token; the cache keeps one entry per identity (per exact token, or per
// issuer and subject), each with its own key, singleflight and refresh
// loop, in one table bounded across all profiles. The decisions (when an
// identity refreshes, when it is dropped) are in policy.go.

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// Identity is what the cache knows of a workload token: its public
// claims, never the token itself. It is safe to log and to show.
type Identity struct {
	Issuer, Subject string
	// Kubernetes claims, "" when the token has none.
	Namespace, ServiceAccount, Pod, Node string
	// Expires is the token's expiry (its exp).
	Expires time.Time
}

// String names the identity for people: issuer and subject, and the pod
// when the token names one.
func (id Identity) String() string {
	s := fmt.Sprintf("%s:%s", id.Issuer, id.Subject)
	if id.Pod != "" {
		s += " (pod " + id.Namespace + "/" + id.Pod + ")"
	}
	return s
}

// MarshalZerologObject logs the identity's public claims.
func (id Identity) MarshalZerologObject(e *zerolog.Event) {
	e.Str("iss", id.Issuer).Str("sub", id.Subject)
	if id.Namespace != "" {
		e.Str("namespace", id.Namespace)
	}
	if id.ServiceAccount != "" {
		e.Str("service_account", id.ServiceAccount)
	}
	if id.Pod != "" {
		e.Str("pod", id.Pod)
	}
	if id.Node != "" {
		e.Str("node", id.Node)
	}
}

// WorkloadSpec makes a CacheProfile a workload profile: its keys are
// bought with each caller's own token.
type WorkloadSpec struct {
	// Check validates a token the cache has not seen, locally and before
	// any upstream call, and returns its identity. Its errors are returned
	// to the caller unchanged (they say why the token is refused and must
	// not hold it). It is called once per new token, not per request.
	Check func(ctx context.Context, token string) (Identity, error)
	// ShareIdentity keys entries by issuer and subject: every token of one
	// identity shares its key. Check must then verify signatures, since a
	// token it accepts reaches every key of its subject. Otherwise entries
	// are keyed by the exact token, which only its holder can present.
	ShareIdentity bool
	// Mint buys a key upstream with token, the newest token held for id.
	Mint func(ctx context.Context, token string, id Identity) (*cwapi.Credentials, error)
}

// ErrTokenRequired: Get was asked for a workload profile, whose keys are
// only served to a caller presenting its own token (GetFor).
var ErrTokenRequired = errors.New("this profile serves keys only to a caller presenting its own OIDC token")

// ErrTooManyPendingTokens: GetFor refused a token it had not seen, with no
// upstream call, because the peer presenting it already brought
// MaxPendingTokensPerPeer identities into the cache that hold no key (their
// first mint is waiting, or upstream refused their token; see
// DefaultMaxPendingTokensPerPeer). Its text is for the client.
var ErrTooManyPendingTokens = errors.New("too many new workload tokens from this client are waiting for their first key " +
	"or were refused by CoreWeave; retry in a minute, and check that each process presents its pod's own current " +
	"projected service account token")

// Peer identifies who presents a workload token to GetFor, for the bound
// on the identities without a key each peer may bring
// (CacheOptions.MaxPendingTokensPerPeer): a local user by UID (HasUID),
// else a remote address, a pod's. Peers are compared as values; the zero
// Peer is one peer like any other.
type Peer struct {
	UID    uint32
	HasUID bool
	Addr   netip.Addr // when !HasUID
}

// errEvicted is the cancellation cause of a dropped identity.
var errEvicted = errors.New("workload identity dropped from the cache")

// Why an identity left the cache, for the observer.
const (
	EvictExpired = "expired" // no unexpired token remains
	EvictLRU     = "lru"     // the table was full
	EvictRemoved = "removed" // its profile was removed or replaced, or the cache stopped
)

// identity is the workload part of an identity entry.
type identity struct {
	profile *entry
	key     string // table key within the profile: the token hash or iss NUL sub
	// newest is the held token that expires last, with its identity; the
	// refresh mints with it. In memory only.
	newest   atomic.Pointer[heldToken]
	lastUsed atomic.Int64 // unix nanoseconds of the last request, for LRU
	// Guarded by identityTable.mu.
	hashes  [][sha256.Size]byte
	dropped bool
	// unkeyedAt is the identity's index in identityTable.unkeyed, -1 once
	// it left (its first key, or its drop); unkeyedUsed is the lastUsed it
	// is ordered there by.
	unkeyedAt   int
	unkeyedUsed int64
	// looping: its loop was started; guarded by Cache.mu.
	looping bool
	// peer brought the identity into the table; while the identity is in
	// identityTable.unkeyed it counts in that peer's peerCharge.pending.
	// Guarded by identityTable.mu.
	peer Peer
}

// heldToken is one token the cache accepted for an identity.
type heldToken struct {
	raw string
	id  Identity
}

// tokenRecord maps a token's hash to its identity entry, and to the
// token's own claims (in identity sharing, another pod's than the newest).
type tokenRecord struct {
	ent  *entry
	held *heldToken
}

type identityKey struct {
	profile *entry
	key     string
}

// identityTable holds every workload identity of a Cache. A request with
// a known token takes the read lock once; new tokens and drops take the
// write lock.
type identityTable struct {
	max    int
	mu     sync.RWMutex
	tokens map[[sha256.Size]byte]tokenRecord
	byKey  map[identityKey]*entry
	// unkeyed holds the identities that never held a key (from their
	// creation to their first key: keyed), for victim: a flood of forged
	// tokens makes each new one drop one of these, so that choice must not
	// cost a pass over the table. Each also counts against its peer's
	// bound while it is here.
	unkeyed unkeyedHeap
	// maxPending bounds each peer's charge (MaxPendingTokensPerPeer; < 0:
	// no bound, nothing charged). peers holds the charge of every peer
	// with one; released the end of each hold (PendingTokenHold), oldest
	// first.
	maxPending int
	peers      map[Peer]*peerCharge
	released   []heldCharge
}

// peerCharge is what one peer counts against its bound: the identities it
// brought into the table that hold no key yet (in identityTable.unkeyed),
// and those that left the table without one, for PendingTokenHold.
type peerCharge struct {
	pending int
	held    int
}

// heldCharge ends one of peer's held charges at at.
type heldCharge struct {
	peer Peer
	at   time.Time
}

func newIdentityTable(max, maxPending int) *identityTable {
	return &identityTable{max: max, maxPending: maxPending, tokens: map[[sha256.Size]byte]tokenRecord{},
		byKey: map[identityKey]*entry{}, peers: map[Peer]*peerCharge{}}
}

// admitLocked reports whether peer may bring one more identity into the
// table at now: its charge is below the bound. Under t.mu.
func (t *identityTable) admitLocked(peer Peer, now time.Time) bool {
	if t.maxPending < 0 {
		return true
	}
	for len(t.released) > 0 && !now.Before(t.released[0].at) {
		t.peers[t.released[0].peer].held--
		t.tidyLocked(t.released[0].peer)
		t.released[0] = heldCharge{}
		t.released = t.released[1:]
	}
	pc := t.peers[peer]
	return pc == nil || pc.pending+pc.held < t.maxPending
}

// addUnkeyedLocked enters e, just created by peer at now, in t.unkeyed and
// in peer's charge. Under t.mu.
func (t *identityTable) addUnkeyedLocked(e *entry, peer Peer, now time.Time) {
	e.ident.peer = peer
	e.ident.unkeyedUsed = now.UnixNano()
	heap.Push(&t.unkeyed, e)
	if t.maxPending < 0 {
		return
	}
	pc := t.peers[peer]
	if pc == nil {
		pc = &peerCharge{}
		t.peers[peer] = pc
	}
	pc.pending++
}

// leaveUnkeyedLocked takes e out of t.unkeyed and of its peer's pending
// charge, if it is still there: at its first key, or when it leaves the
// table at now (dropped) without one, which its peer still counts for
// PendingTokenHold. Under t.mu.
func (t *identityTable) leaveUnkeyedLocked(e *entry, dropped bool, now time.Time) {
	if e.ident.unkeyedAt < 0 {
		return
	}
	heap.Remove(&t.unkeyed, e.ident.unkeyedAt)
	if t.maxPending < 0 {
		return
	}
	peer := e.ident.peer
	pc := t.peers[peer]
	pc.pending--
	if dropped {
		pc.held++
		t.released = append(t.released, heldCharge{peer: peer, at: now.Add(PendingTokenHold)})
	}
	t.tidyLocked(peer)
}

// keyed records that e, a workload identity, got its first key: its token
// proved genuine, so it is no longer among the first to drop (victim) nor
// counted against its peer's bound.
func (t *identityTable) keyed(e *entry) {
	t.mu.Lock()
	t.leaveUnkeyedLocked(e, false, time.Time{})
	t.mu.Unlock()
}

// tidyLocked forgets peer once it has no charge left. Under t.mu.
func (t *identityTable) tidyLocked(peer Peer) {
	if pc := t.peers[peer]; pc != nil && pc.pending == 0 && pc.held == 0 {
		delete(t.peers, peer)
	}
}

// tokenHash hashes the token without copying it: sha256 only reads its
// input, and a per-request copy of a kilobyte token would be the hit
// path's only allocation.
func tokenHash(token string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

// count is how many identities a profile entry holds.
func (t *identityTable) count(profile *entry) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for k := range t.byKey {
		if k.profile == profile {
			n++
		}
	}
	return n
}

// GetFor returns a key for the caller presenting token, on a workload
// profile: the cached key of the token's identity, else one minted with
// it (concurrent callers of one identity share the mint). A token the
// cache has not seen is first checked by WorkloadSpec.Check, whose refusal
// is returned without an upstream call; so is an expired token. It also
// returns the caller's identity (its token's claims), for the audit trail:
// immutable, and the same pointer for every request with one token. Only
// workload profiles (Workload) answer; others take Get.
//
// peer is who presents the token. A token that would bring a new identity
// into the cache is refused with ErrTooManyPendingTokens, with no upstream
// call, while peer has MaxPendingTokensPerPeer identities there that never
// held a key: one peer's forged tokens cannot spend the upstream budget
// other peers' first mints wait for.
func (h Entry) GetFor(ctx context.Context, peer Peer, token string) (*cwapi.Credentials, *Identity, error) {
	if h.e == nil {
		return nil, nil, ErrUnknownProfile
	}
	if h.e.workload == nil {
		return nil, nil, fmt.Errorf("profile %q is not a workload profile: it takes a client token", h.e.name)
	}
	return h.c.getFor(ctx, h.e, peer, token)
}

// Workload reports whether the entry is a workload profile's, whose keys
// are served by GetFor.
func (h Entry) Workload() bool { return h.e != nil && h.e.workload != nil }

func (c *Cache) getFor(ctx context.Context, pe *entry, peer Peer, token string) (*cwapi.Credentials, *Identity, error) {
	now := c.now()
	sum := tokenHash(token)
	t := c.idents
	t.mu.RLock()
	rec, ok := t.tokens[sum]
	t.mu.RUnlock()
	if ok && rec.ent.ident.profile == pe && rec.ent.ctx.Err() == nil && now.Before(rec.held.id.Expires) {
		ie := rec.ent
		ie.ident.lastUsed.Store(now.UnixNano())
		id := &rec.held.id
		s := ie.state.Load()
		if k, _ := s.serve(now); k != nil {
			if s.failures == 0 {
				ie.obs.Hit()
			} else {
				ie.obs.StaleHit()
			}
			return k, id, nil
		}
		k, err := c.get(ctx, ie)
		return k, id, workloadErr(err)
	}
	// A token not seen (or whose record is stale): check it. An expired
	// token is refused here too, by Check, with its reason.
	id, err := pe.workload.Check(ctx, token)
	if err != nil {
		pe.obs.TokenRefused(err)
		return nil, nil, err
	}
	if !now.Before(id.Expires) {
		// Check allowed for clock skew; the cache serves no expired token.
		err := fmt.Errorf("%w at %s", ErrTokenExpired, id.Expires.UTC().Format(time.RFC3339))
		pe.obs.TokenRefused(err)
		return nil, nil, err
	}
	held := &heldToken{raw: token, id: id}
	ie, err := c.adopt(pe, peer, sum, held, now)
	if errors.Is(err, ErrTooManyPendingTokens) {
		pe.obs.TokenRefused(err)
		return nil, nil, err
	}
	if err != nil {
		return nil, &held.id, &UnavailableError{Profile: pe.name, Err: err}
	}
	k, err := c.get(ctx, ie)
	return k, &held.id, workloadErr(err)
}

// workloadErr marks an *UnavailableError from an identity entry as a
// workload's.
func workloadErr(err error) error {
	var ue *UnavailableError
	if errors.As(err, &ue) {
		ue.Workload = true
	}
	return err
}

// ErrTokenExpired: the token Check accepted has expired (Check allows for
// clock skew; the cache never serves an expired token).
var ErrTokenExpired = errors.New("the workload token expired")

// adopt records the checked token held (hash sum), presented by peer, and
// returns the entry of its identity, creating it (when peer's bound allows:
// else ErrTooManyPendingTokens, and nothing changes), and evicting one when
// the table is full (see victim).
func (c *Cache) adopt(pe *entry, peer Peer, sum [sha256.Size]byte, held *heldToken, now time.Time) (*entry, error) {
	id := held.id
	key := string(sum[:])
	if pe.workload.ShareIdentity {
		key = id.Issuer + "\x00" + id.Subject
	}
	t := c.idents
	t.mu.Lock()
	if err := context.Cause(pe.ctx); err != nil {
		t.mu.Unlock()
		return nil, err // the profile was removed meanwhile, or the cache stopped
	}
	ie := t.byKey[identityKey{pe, key}]
	var evicted *entry
	created := ie == nil
	if created {
		if !t.admitLocked(peer, now) {
			t.mu.Unlock()
			return nil, ErrTooManyPendingTokens
		}
		if len(t.byKey) >= t.max {
			evicted = t.victim(now)
			t.removeLocked(evicted, now)
		}
		ie = c.newIdentityEntry(pe, key)
		t.byKey[identityKey{pe, key}] = ie
		t.addUnkeyedLocked(ie, peer, now)
	}
	ident := ie.ident
	ident.lastUsed.Store(now.UnixNano())
	if cur := ident.newest.Load(); cur == nil || id.Expires.After(cur.id.Expires) {
		ident.newest.Store(held)
	}
	if _, known := t.tokens[sum]; !known {
		ident.hashes = append(ident.hashes, sum)
		if len(ident.hashes) > maxTokensPerIdentity {
			delete(t.tokens, ident.hashes[0])
			ident.hashes = ident.hashes[1:]
		}
	}
	t.tokens[sum] = tokenRecord{ent: ie, held: held}
	t.mu.Unlock()

	if evicted != nil {
		c.dropIdentity(evicted, EvictLRU)
	}
	if created {
		pe.obs.IdentityAdded()
		c.startIdentityLoop(ie)
	} else {
		select { // a later expiry moves the loop's eviction
		case ie.changed <- struct{}{}:
		default:
		}
	}
	return ie, nil
}

// newIdentityEntry builds the entry of one identity of the workload
// profile pe: its mints use the newest token held.
func (c *Cache) newIdentityEntry(pe *entry, key string) *entry {
	ident := &identity{profile: pe, key: key, unkeyedAt: -1}
	spec := pe.workload
	e := &entry{name: pe.name, source: pe.source, obs: pe.obs, mints: pe.mints, changed: make(chan struct{}, 1), ident: ident}
	e.minter = cwapi.MinterFunc(func(ctx context.Context) (*cwapi.Credentials, error) {
		h := ident.newest.Load()
		return spec.Mint(ctx, h.raw, h.id)
	})
	e.ctx, e.cancel = context.WithCancelCause(pe.ctx)
	e.state.Store(&state{})
	return e
}

// victim returns the identity to drop for a new one; under t.mu, with at
// least one identity. It is the least recently used of those with no key
// to serve at now (never minted: upstream refused the token, or its first
// mint is still waiting), else the least recently used of all. In token
// mode the daemon checks a token's claims but not its signature, so anyone
// who can reach it can present any number of well-formed forged tokens,
// each a new identity that upstream then refuses: those only ever displace
// each other, never an identity holding a key (a local user's flood used
// to evict every workload's cached key and make each mint again).
//
// The identities with no key are looked for first among those that never
// held one (t.unkeyed), in O(log n) amortized: a forged token never
// gets a key, so in a flood each new identity costs that, not a pass over
// the table under the write lock, which stalled every workload's hits
// (their read lock) for as long. Only when none is left (every identity
// has held a key: the table outgrew its bound with real workloads) does
// victim scan the table. So an identity that held a key and lost it (its
// refreshes failed until it expired) is dropped after the never-keyed
// ones, however recently they were used; an identity holding a key still
// never goes while one without does.
func (t *identityTable) victim(now time.Time) *entry {
	// Each member is moved at most once per request made with its token
	// since it last moved (lastUsed changed); the bound stops a loop on
	// clocks going back.
	for moves := len(t.unkeyed); len(t.unkeyed) > 0; moves-- {
		e := t.unkeyed[0]
		u := e.ident.lastUsed.Load()
		if u == e.ident.unkeyedUsed || moves == 0 {
			// The exact least recently used: every other member's lastUsed
			// is at least its own unkeyedUsed, which is at least e's.
			return e
		}
		e.ident.unkeyedUsed = u // used since it was ordered: reorder it
		heap.Fix(&t.unkeyed, 0)
	}
	var oldest, oldestKeyless *entry
	var at, atKeyless int64
	for _, e := range t.byKey {
		u := e.ident.lastUsed.Load()
		if oldest == nil || u < at {
			oldest, at = e, u
		}
		if k, _ := e.state.Load().serve(now); k == nil && (oldestKeyless == nil || u < atKeyless) {
			oldestKeyless, atKeyless = e, u
		}
	}
	if oldestKeyless != nil {
		return oldestKeyless
	}
	return oldest
}

// unkeyedHeap orders identities by the lastUsed they were last placed
// with (identity.unkeyedUsed, at most their lastUsed), least first; it
// keeps each one's index in identity.unkeyedAt. Under identityTable.mu.
type unkeyedHeap []*entry

func (h unkeyedHeap) Len() int { return len(h) }
func (h unkeyedHeap) Less(i, j int) bool {
	return h[i].ident.unkeyedUsed < h[j].ident.unkeyedUsed
}
func (h unkeyedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].ident.unkeyedAt = i
	h[j].ident.unkeyedAt = j
}
func (h *unkeyedHeap) Push(x any) {
	e := x.(*entry)
	e.ident.unkeyedAt = len(*h)
	*h = append(*h, e)
}
func (h *unkeyedHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.ident.unkeyedAt = -1
	return e
}

// removeLocked takes e and its tokens out of the table at now; under t.mu.
// It reports whether e was still there.
func (t *identityTable) removeLocked(e *entry, now time.Time) bool {
	if e.ident.dropped {
		return false
	}
	e.ident.dropped = true
	t.leaveUnkeyedLocked(e, true, now)
	delete(t.byKey, identityKey{e.ident.profile, e.ident.key})
	for _, h := range e.ident.hashes {
		if t.tokens[h].ent == e {
			delete(t.tokens, h)
		}
	}
	e.ident.hashes = nil
	return true
}

// dropIdentity removes e from the cache (if still there) and stops its
// loop and mint; its key is forgotten. Idempotent.
func (c *Cache) dropIdentity(e *entry, why string) {
	t := c.idents
	t.mu.Lock()
	removed := t.removeLocked(e, c.now())
	t.mu.Unlock()
	e.cancel(errEvicted)
	if !removed && why != EvictLRU {
		return
	}
	e.obs.IdentityEvicted(why)
	ev := c.log.Info().Str("event", "workload_identity_dropped").Str("profile", e.name).Str("reason", why)
	if h := e.ident.newest.Load(); h != nil {
		ev = ev.Object("identity", h.id)
	}
	ev.Msg("workload identity dropped from the cache")
}

// startIdentityLoop starts e's background loop when Run runs (Run starts
// those of the identities created before it); without Run, identities are
// minted on demand and dropped by the LRU bound.
func (c *Cache) startIdentityLoop(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.startIdentityLoopLocked(e)
}

// startIdentityLoopLocked is startIdentityLoop under c.mu.
func (c *Cache) startIdentityLoopLocked(e *entry) {
	if e.ident.looping || c.runCtx == nil || c.runCtx.Err() != nil || c.ctx.Err() != nil {
		return
	}
	e.ident.looping = true
	ctx := c.runCtx
	c.loops.Go(func() { c.identityLoop(ctx, e) })
}

// startIdentityLoops starts the loops of the identities already cached;
// Run calls it under c.mu.
func (c *Cache) startIdentityLoops() {
	t := c.idents
	t.mu.RLock()
	ents := make([]*entry, 0, len(t.byKey))
	for _, e := range t.byKey {
		ents = append(ents, e)
	}
	t.mu.RUnlock()
	for _, e := range ents {
		c.startIdentityLoopLocked(e)
	}
}

// identityLoop refreshes e while a token for it is held and drops it when
// none is (see identityPlan), or when its profile goes away.
func (c *Cache) identityLoop(ctx context.Context, e *entry) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if e.ctx.Err() != nil {
			why := EvictRemoved
			if errors.Is(context.Cause(e.ctx), errEvicted) {
				return // dropIdentity already reported it
			}
			c.dropIdentity(e, why)
			return
		}
		now := c.now()
		at, mint := e.state.Load().identityPlan(e.ident.newest.Load().id.Expires, now)
		if wait := at.Sub(now); wait > 0 {
			timer.Reset(wait)
			select {
			case <-e.ctx.Done():
				continue
			case <-e.changed:
				continue
			case <-timer.C:
				continue
			}
		}
		if !mint {
			c.dropIdentity(e, EvictExpired)
			return
		}
		select {
		case c.refreshSlots <- struct{}{}:
		case <-e.ctx.Done():
			continue
		case <-e.changed:
			continue
		}
		<-e.sf.DoChan("", func() (any, error) { return c.mint(ctx, e, triggerRefresh), nil })
		<-c.refreshSlots
		select {
		case <-e.changed:
		default:
		}
	}
}
