package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// CacheProfile is one profile the cache serves.
type CacheProfile struct {
	Name   string
	Source cwapi.Source
	Minter cwapi.Minter
	// Revoker revokes the profile's keys upstream, for Cache.Revoke. Nil
	// means Revoke refuses for this profile.
	Revoker cwapi.Revoker
	// Fingerprint identifies what the profile mints, for Cache.Update: the
	// caller puts there everything that decides which key gets minted and
	// how (source, token file, organization, SAML configuration, duration,
	// upstream URL...). The cache only compares it: a profile whose name and
	// fingerprint are unchanged keeps its entry, key, Minter and Revoker. It
	// must hold no secret.
	Fingerprint string
	// Workload, when set, makes this a workload profile: no Minter; each
	// caller's own token buys the keys of its identity (see GetFor).
	Workload *WorkloadSpec
	// Lister, if set, lists the keys upstream stamped with this profile's
	// node and profile attributes, so that after a mint times out the cache
	// revokes (with Revoker, which must then be set) the key it may have
	// left: see reap.go. Nil: an orphan lives until it expires.
	Lister cwapi.KeyLister
	// KeyLifetime is the lifetime the profile's mints request; the reaper
	// needs it to tell the key a timed-out mint left from older ones.
	KeyLifetime time.Duration
}

// CacheOptions tunes a Cache. The zero value of each field means the
// default, except where a field says otherwise.
type CacheOptions struct {
	// Now reads the clock. Default time.Now. Timers use the runtime's clock,
	// so tests of Run use testing/synctest.
	Now func() time.Time
	// Rand returns a number in [0, 1) for jitter. Default math/rand/v2.
	Rand func() float64
	// Logger receives mint and refresh events. Default: discard.
	Logger zerolog.Logger
	// Observer receives cache events, for metrics. Default: none.
	Observer Observer
	// KeyWarmup is how long a key minted to replace a still-servable one
	// waits before it is served; the previous key is served meanwhile (see
	// Cache). Zero means no warm-up: the library default is none; the
	// daemon's default is its configuration's (CWCREDS_KEY_WARMUP).
	KeyWarmup time.Duration
	// MaxConcurrentRefreshes caps the background (Run-triggered) mints in
	// flight at once across all profiles. Mints for a client that found no
	// key are not counted and never wait for this cap. Zero or less means
	// DefaultMaxConcurrentRefreshes.
	MaxConcurrentRefreshes int
	// MaxWorkloadIdentities bounds the workload identities cached across
	// all workload profiles; past it the least recently used identity with
	// no key to serve is dropped, else the least recently used. Those that
	// never held a key (a token upstream refused, a first mint still
	// waiting) go before one that held a key and lost it.
	// Zero or less means DefaultMaxWorkloadIdentities.
	MaxWorkloadIdentities int
	// MaxPendingTokensPerPeer bounds the workload identities each peer
	// (GetFor's Peer) has in the cache that never held a key; a new
	// token of a peer at the bound is refused (ErrTooManyPendingTokens)
	// with no upstream call. An identity that leaves without a key counts
	// for PendingTokenHold more. Zero means DefaultMaxPendingTokensPerPeer;
	// negative means no bound.
	MaxPendingTokensPerPeer int
	// UpstreamQPS is the most mints per second started upstream, across
	// all profiles (a token bucket with a burst of as many, at least 1).
	// Zero or less means no limit (the library default; the daemon's is
	// its configuration's, CWCREDS_UPSTREAM_QPS).
	UpstreamQPS float64
	// Verifier, if set, checks every new key against the object store
	// before it is served, and replaces KeyWarmup: see verify.go.
	Verifier KeyVerifier
}

// ErrCacheStopped: Update was called after Run's context ended. The cache
// no longer mints, so it refuses new profiles rather than pretend to serve
// them.
var ErrCacheStopped = errors.New("the credential cache has stopped")

// errRemoved is the mint error of a profile that Update removed or replaced
// while its mint was in flight.
var errRemoved = errors.New("the profile was removed or replaced by a configuration update")

// Cache holds one key per profile and keeps it fresh.
//
// Get is safe for concurrent use. Its hit path is two atomic loads (the
// profile set and the profile's state) and a clock read: it takes no lock
// that a mint or Update holds. Concurrent misses for one profile share one
// upstream call, and a caller whose context ends leaves without cancelling
// that call. Run refreshes keys in the background; without Run keys are
// still minted on demand, but only when none is valid.
//
// With a KeyWarmup, a key minted to replace one that is still servable is
// held back until it is KeyWarmup old, because the object store may refuse
// a brand-new key for a few seconds; the previous key is served meanwhile,
// for as long as it stays servable. A first key, a key minted while no
// other can be served, and the key Revoke mints are served at once.
//
// Update replaces the profile set at any time, including while Run runs.
type Cache struct {
	// live is the current profile set. Update replaces the map, never
	// modifies one in place, so Get reads it with one atomic load.
	live atomic.Pointer[map[string]*entry]
	// refreshSlots holds a token per background mint in flight
	// (MaxConcurrentRefreshes).
	refreshSlots chan struct{}
	now          func() time.Time
	rand         func() float64
	log          zerolog.Logger
	obs          Observer
	keyWarmup    time.Duration
	idents       *identityTable
	budget       *budget
	verifier     KeyVerifier
	// checks counts the S3 checks and orphan reaps running (verify.go,
	// reap.go).
	checks sync.WaitGroup

	// ctx is every entry's parent: stop cancels it with errShuttingDown
	// when Run's context ends, which ends every refresh loop and mint.
	ctx  context.Context
	stop context.CancelCauseFunc

	// mu serialises Update with Run's start and end. Get, mints and
	// refresh loops never take it.
	mu sync.Mutex
	// runCtx is Run's context once Run started; under mu.
	runCtx context.Context
	// loops counts the refresh loops, which Run and Update start under mu
	// while Run runs; Run waits for them once stopped.
	loops sync.WaitGroup
}

type entry struct {
	name        string
	source      cwapi.Source
	fingerprint string
	minter      cwapi.Minter
	revoker     cwapi.Revoker
	lister      cwapi.KeyLister
	lifetime    time.Duration
	obs         ProfileObserver
	// sf shares one mint (or revoke) among the entry's callers. It is the
	// entry's own, so a removed entry's flight is never shared with its
	// successor's.
	sf    singleflight.Group
	state atomic.Pointer[state]
	// changed wakes the refresh loop when a mint it did not start changes
	// the state (capacity 1; sends never block).
	changed chan struct{}
	// ctx ends when Update drops the entry (cause errRemoved) or the cache
	// stops (errShuttingDown): its refresh loop exits and its mint in
	// flight is cancelled.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// workload is set on a workload profile's entry, which holds no key
	// itself; ident on each of its identities' entries.
	workload *WorkloadSpec
	ident    *identity
	// mints records the profile's recent mints (shared by its identities),
	// for Status.
	mints *mintLog
}

// NewCache returns a cache for profiles. Profile names must be unique.
func NewCache(profiles []CacheProfile, opts ...func(*CacheOptions)) (*Cache, error) {
	o := CacheOptions{Logger: zerolog.Nop()}
	for _, fn := range opts {
		fn(&o)
	}
	if err := validateProfiles(profiles); err != nil {
		return nil, err
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.MaxConcurrentRefreshes <= 0 {
		o.MaxConcurrentRefreshes = DefaultMaxConcurrentRefreshes
	}
	if o.MaxPendingTokensPerPeer == 0 {
		o.MaxPendingTokensPerPeer = DefaultMaxPendingTokensPerPeer
	}
	if o.MaxWorkloadIdentities <= 0 {
		o.MaxWorkloadIdentities = DefaultMaxWorkloadIdentities
	}
	c := &Cache{
		refreshSlots: make(chan struct{}, o.MaxConcurrentRefreshes),
		now:          o.Now,
		rand:         o.Rand,
		log:          o.Logger,
		obs:          o.Observer,
		keyWarmup:    max(o.KeyWarmup, 0),
		idents:       newIdentityTable(o.MaxWorkloadIdentities, o.MaxPendingTokensPerPeer),
		verifier:     o.Verifier,
	}
	if c.verifier != nil {
		c.keyWarmup = VerifyPropagationLimit // the check decides the swap (policy.go: checked)
	}
	c.ctx, c.stop = context.WithCancelCause(context.Background())
	if o.Now == nil {
		c.now = time.Now
	}
	if o.Rand == nil {
		c.rand = rand.Float64
	}
	c.budget = newBudget(o.UpstreamQPS, c.now)
	live := make(map[string]*entry, len(profiles))
	for _, p := range profiles {
		live[p.Name] = c.newEntry(p)
	}
	c.live.Store(&live)
	return c, nil
}

func validateProfiles(profiles []CacheProfile) error {
	seen := make(map[string]bool, len(profiles))
	for _, p := range profiles {
		if p.Name == "" || (p.Minter == nil) == (p.Workload == nil) {
			return fmt.Errorf("cache profile %q: a name, and a minter or a workload spec (not both), are required", p.Name)
		}
		if w := p.Workload; w != nil && (w.Check == nil || w.Mint == nil) {
			return fmt.Errorf("cache profile %q: a workload spec needs Check and Mint", p.Name)
		}
		if strings.ContainsRune(p.Name, 0) {
			return fmt.Errorf("cache profile %q: name holds a NUL byte", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("cache profile %q: duplicate name", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

func (c *Cache) newEntry(p CacheProfile) *entry {
	e := &entry{name: p.Name, source: p.Source, fingerprint: p.Fingerprint, minter: p.Minter,
		revoker: p.Revoker, obs: c.obs.Profile(p.Name), changed: make(chan struct{}, 1),
		workload: p.Workload, mints: &mintLog{},
		lister: p.Lister, lifetime: p.KeyLifetime}
	e.ctx, e.cancel = context.WithCancelCause(c.ctx)
	e.state.Store(&state{})
	return e
}

// lookup returns the current entry for profile, or nil.
func (c *Cache) lookup(profile string) *entry {
	return (*c.live.Load())[profile]
}

// Entry is one profile of the cache as the NewCache or Update that
// configured it made it: the profile set is one immutable snapshot, and an
// Entry pins its member. A caller that keeps its own per-profile data (the
// server: client tokens, access rules) stores the Entry beside it, taken
// right after Update, so that a request reads both from one snapshot of its
// own and a reload never pairs one configuration's data with another's key.
// The zero Entry is no profile. Entries are comparable: Update keeps an
// Entry (==) exactly when it keeps the profile (UpdateResult.Kept).
type Entry struct {
	c *Cache
	e *entry
}

// Lookup returns the profile's current Entry, or the zero Entry when the
// profile is not configured.
func (c *Cache) Lookup(profile string) Entry {
	if e := c.lookup(profile); e != nil {
		return Entry{c, e}
	}
	return Entry{}
}

// Get is Cache.Get for the entry's profile, as configured when Lookup
// returned it. Once Update has dropped the entry it still serves the key it
// holds while that stays servable, but never mints again; the zero Entry
// answers ErrUnknownProfile. The hit path allocates nothing.
func (h Entry) Get(ctx context.Context) (*cwapi.Credentials, error) {
	if h.e == nil {
		return nil, ErrUnknownProfile
	}
	if h.e.workload != nil {
		return nil, fmt.Errorf("profile %q: %w", h.e.name, ErrTokenRequired)
	}
	return h.c.get(ctx, h.e)
}

// UpdateResult reports what Update did, by profile name, each list sorted.
type UpdateResult struct {
	// Kept: same name and fingerprint; the entry, its key and its refresh
	// loop carry on untouched.
	Kept []string
	// Added: new names; they start cold and, while Run runs, warm at once.
	Added []string
	// Replaced: same name, different fingerprint. The old key belongs to
	// another identity and is dropped (never served again); the profile
	// starts cold like an added one.
	Replaced []string
	// Removed: names no longer configured; Get refuses them with
	// ErrUnknownProfile, and their refresh loops and mints in flight stop.
	Removed []string
}

// Update replaces the profile set with profiles, for a configuration
// reload. It validates profiles like NewCache and changes nothing on error.
// When it returns, Get and Status see the new set; the new entries' refresh
// loops run if Run is running, or start when Run does.
// A mint in flight for a removed or replaced entry is cancelled and never
// writes into, nor is shared with, the entry that replaces it.
//
// Update is safe to call concurrently with everything else. After Run's
// context has ended it returns ErrCacheStopped and changes nothing.
func (c *Cache) Update(profiles []CacheProfile) (UpdateResult, error) {
	if err := validateProfiles(profiles); err != nil {
		return UpdateResult{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil || c.runCtx != nil && c.runCtx.Err() != nil {
		return UpdateResult{}, ErrCacheStopped
	}
	old := *c.live.Load()
	next := make(map[string]*entry, len(profiles))
	var res UpdateResult
	for _, p := range profiles {
		prev := old[p.Name]
		if prev != nil && prev.fingerprint == p.Fingerprint {
			next[p.Name] = prev
			res.Kept = append(res.Kept, p.Name)
			continue
		}
		if prev != nil {
			res.Replaced = append(res.Replaced, p.Name)
		} else {
			res.Added = append(res.Added, p.Name)
		}
		e := c.newEntry(p)
		next[p.Name] = e
		if c.runCtx != nil && e.workload == nil {
			c.loops.Go(func() { c.refreshLoop(c.runCtx, e) })
		}
	}
	c.live.Store(&next)
	// Only now, once Get can no longer find them, stop the dropped entries.
	for name, e := range old {
		if next[name] != e {
			e.cancel(errRemoved)
			if next[name] == nil {
				res.Removed = append(res.Removed, name)
			}
		}
	}
	for _, l := range [][]string{res.Kept, res.Added, res.Replaced, res.Removed} {
		slices.Sort(l)
	}
	c.log.Info().Str("event", "profiles_updated").Strs("kept", res.Kept).Strs("added", res.Added).
		Strs("replaced", res.Replaced).Strs("removed", res.Removed).Msg("profile set updated")
	return res, nil
}

// Get returns a key for profile that stays valid for at least the serve
// margin. A warm profile answers from memory. A cold one waits for the one
// shared mint, or for ctx. When no key can be served the error is an
// *UnavailableError (errors.Is ErrNoValidKey) saying why; an unconfigured
// profile gives ErrUnknownProfile.
func (c *Cache) Get(ctx context.Context, profile string) (*cwapi.Credentials, error) {
	e := c.lookup(profile)
	if e == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProfile, profile)
	}
	if e.workload != nil {
		return nil, fmt.Errorf("profile %q: %w", profile, ErrTokenRequired)
	}
	return c.get(ctx, e)
}

func (c *Cache) get(ctx context.Context, e *entry) (*cwapi.Credentials, error) {
	profile := e.name
	now := c.now()
	s := e.state.Load()
	if k, _ := s.serve(now); k != nil {
		if s.failures == 0 {
			e.obs.Hit()
		} else {
			e.obs.StaleHit() // refreshing is failing; the old key is still valid
		}
		return k, nil
	}
	e.obs.Miss()
	if s.holding(now) {
		return c.awaitCheck(ctx, e, s)
	}
	if now.Before(s.nextMint(now)) {
		return nil, s.unavailable(profile) // backing off: no upstream call
	}
	if err := context.Cause(e.ctx); err != nil {
		// Dropped by Update, or the cache stopped: no upstream call.
		return nil, &UnavailableError{Profile: profile, Err: err}
	}
	select {
	case r := <-e.sf.DoChan("", func() (any, error) { return c.mint(ctx, e, triggerRequest), nil }):
		s := r.Val.(*state)
		if k, _ := s.serve(c.now()); k != nil {
			return k, nil
		}
		if s.holding(c.now()) {
			return c.awaitCheck(ctx, e, s)
		}
		return nil, s.unavailable(profile)
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a key for %q: %w", profile, ctx.Err())
	}
}

// What started a mint, for the log.
const (
	triggerRequest = "request" // a client found no servable key
	triggerRefresh = "refresh" // the background loop: warm-up, refresh or retry
	triggerRevoke  = "revoke"  // Revoke replaced a revoked key
)

// upstreamContext returns the context for one upstream call made on
// behalf of every caller sharing a flight: detached from ctx's cancellation
// (keeping its values), bounded by MintTimeout, and cancelled with done's
// cause when done ends (the entry dropped, or the cache stopped).
func upstreamContext(ctx, done context.Context) (context.Context, context.CancelFunc) {
	uctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stop := context.AfterFunc(done, func() { cancel(context.Cause(done)) })
	uctx, cancelTimeout := context.WithTimeout(uctx, MintTimeout)
	return uctx, func() { stop(); cancelTimeout(); cancel(nil) }
}

// mint runs one upstream mint for e, unless another one finished meanwhile,
// and stores the outcome. It is only called inside e.sf, so at most one
// runs per entry. The mint is detached from ctx's cancellation
// (other callers share it) but bounded by MintTimeout and stopped by Run's
// shutdown or by Update dropping e.
func (c *Cache) mint(ctx context.Context, e *entry, trigger string) *state {
	start := c.now()
	old := e.state.Load()
	if start.Before(old.nextMint(start)) {
		return old // a flight that just ended already did the work
	}
	if err := c.budget.wait(e.ctx, trigger == triggerRequest); err != nil {
		// Cancelled while queued for the upstream budget: nothing was sent.
		return c.failedMint(e, old, err, c.now(), trigger)
	}
	mctx, cancel := upstreamContext(ctx, e.ctx)
	defer cancel()

	e.obs.MintStarted(trigger)
	e.mints.add(start)
	key, err := e.minter.Mint(mctx)
	now := c.now()
	c.budget.pauseFor(err, now)
	if err == nil {
		var permanent bool
		if key, permanent, err = usableKey(key, now); permanent {
			c.log.Warn().Str("profile", e.name).Str("access_key_id", key.AccessKeyID).
				Msg("upstream minted a permanent key; it will be replaced like a temporary one")
		}
	}
	e.obs.MintDone(err) // a key the cache refuses is a failed mint
	if err != nil {
		if cause := context.Cause(mctx); errors.Is(cause, errShuttingDown) || errors.Is(cause, errRemoved) ||
			errors.Is(cause, errEvicted) {
			err = cause
		}
		if reapAfter(err) {
			defer c.startReap(e, start, now)
		}
		return c.failedMint(e, old, err, now, trigger)
	}
	next := old.minted(key, start, now, c.rand(), c.keyWarmup, trigger == triggerRevoke)
	if e.ident != nil && firstKey(old) {
		c.idents.keyed(e) // before the key is stored: unkeyed never holds a keyed identity
	}
	if c.verifier != nil {
		next = next.checking(now)
	}
	ev := c.log.Info().Bool("audit", true).Str("event", "key_minted").
		Str("profile", e.name).Str("source", string(e.source)).Str("trigger", trigger).
		EmbedObject(key).Dur("latency_ms", next.mintLatency).Time("refresh_at", next.refreshAt).
		Time("serve_from", next.takeover())
	if e.ident != nil {
		ev = ev.Object("identity", e.ident.newest.Load().id)
	}
	if old.key != nil {
		ev = ev.Str("previous_access_key_id", old.key.AccessKeyID)
	}
	ev.Msg("key minted")
	st := c.store(e, &next)
	if c.verifier != nil {
		c.startCheck(e, st)
	}
	return st
}

// failedMint stores the outcome of a mint of e that failed at now with err.
func (c *Cache) failedMint(e *entry, old *state, err error, now time.Time, trigger string) *state {
	next, wait := old.failed(err, now, c.rand())
	c.logFailure(e, &next, err, wait, now, trigger)
	return c.store(e, &next)
}

// store makes next e's state and wakes e's loop.
func (c *Cache) store(e *entry, next *state) *state {
	e.state.Store(next)
	select {
	case e.changed <- struct{}{}:
	default:
	}
	return next
}

func (c *Cache) logFailure(e *entry, s *state, err error, wait time.Duration, now time.Time, trigger string) {
	ev := c.log.Warn()
	var api *cwapi.APIError
	switch {
	case errors.Is(err, errRemoved), errors.Is(err, errEvicted):
		ev = c.log.Info() // expected during a reload; nothing to fix
	case errors.As(err, &api) && !api.Temporary():
		ev = c.log.Error() // a revoked or wrong credential needs a person
	}
	if hint := rejectionHint(err); hint != "" {
		ev = ev.Str("action_needed", hint)
	}
	if e.ident != nil {
		ev = ev.Object("identity", e.ident.newest.Load().id)
	}
	ev.Bool("audit", true).Str("event", "mint_failed").
		Str("profile", e.name).Str("source", string(e.source)).Str("trigger", trigger).Err(err).
		Int("failures", s.failures).Dur("retry_in_ms", wait).
		Bool("serving_previous_key", s.servable(now)).Msg("mint failed")
}

// Run warms every profile and keeps its key fresh until ctx ends, then
// cancels in-flight mints and returns once every refresh loop has exited,
// including those of profiles Update added meanwhile. At most
// MaxConcurrentRefreshes background mints run at once. Call it once: a
// second call returns at once. After Run returns the cache mints no more.
func (c *Cache) Run(ctx context.Context) {
	c.mu.Lock()
	if c.runCtx != nil || c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	c.runCtx = ctx
	for _, e := range *c.live.Load() {
		if e.workload == nil {
			c.loops.Go(func() { c.refreshLoop(ctx, e) })
		}
	}
	c.startIdentityLoops()
	c.mu.Unlock()

	<-ctx.Done()
	c.mu.Lock() // no Update starts a loop from here on
	c.stop(errShuttingDown)
	c.mu.Unlock()
	c.loops.Wait()
	c.checks.Wait()
}

// refreshLoop keeps e fresh until e.ctx ends (Update dropped e, or Run's
// context ended). ctx is Run's, for its values.
func (c *Cache) refreshLoop(ctx context.Context, e *entry) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for e.ctx.Err() == nil {
		now := c.now()
		if wait := e.state.Load().nextMint(now).Sub(now); wait > 0 {
			timer.Reset(wait)
			select {
			case <-e.ctx.Done():
				return
			case <-e.changed:
				continue
			case <-timer.C:
			}
		}
		// Queue for a refresh slot. A client finding no key does not queue:
		// its own mint wakes us through e.changed, and we re-plan.
		select {
		case c.refreshSlots <- struct{}{}:
		case <-e.ctx.Done():
			return
		case <-e.changed:
			continue
		}
		if e.ctx.Err() != nil {
			<-c.refreshSlots
			return
		}
		// Wait for the mint even if e.ctx ends: that cancels it, and Run
		// must not return while it still writes state.
		<-e.sf.DoChan("", func() (any, error) { return c.mint(ctx, e, triggerRefresh), nil })
		<-c.refreshSlots
		// Drain the wake-up our own mint queued.
		select {
		case <-e.changed:
		default:
		}
	}
}

// Status reports every profile, sorted by name. Expiration and AccessKeyID
// describe the key served now; while a new key warms up, WarmingAccessKeyID
// and WarmingUntil describe it.
func (c *Cache) Status() []Status {
	now := c.now()
	live := *c.live.Load()
	out := make([]Status, 0, len(live))
	for _, e := range live {
		if e.workload != nil {
			out = append(out, Status{Profile: e.name, Source: e.source, Healthy: true,
				Workload: &WorkloadStatus{Identities: c.idents.count(e), MintsLastHour: e.mints.lastHour(now)}})
			continue
		}
		s := e.state.Load()
		served, _ := s.serve(now)
		st := Status{Profile: e.name, Source: e.source, Healthy: served != nil, ConsecutiveFailures: s.failures,
			Reason: s.reason(e.name, now)}
		if served == nil {
			served = s.key // not servable, but still the key the profile holds
		}
		if served != nil {
			st.Principal = served.Principal
			st.AccessKeyID = served.AccessKeyID
			st.Expiration = timePtr(served.Expires)
			st.RefreshAt = timePtr(s.refreshAt)
			st.LastRefresh = timePtr(s.lastRefresh)
			st.LastMintLatencySeconds = s.mintLatency.Seconds()
		}
		if served != nil && served != s.key {
			st.WarmingAccessKeyID = s.key.AccessKeyID
			st.WarmingUntil = timePtr(s.takeover())
			st.RefreshAt = st.WarmingUntil // the served key is replaced then
		}
		if s.check.verdict != checkNone {
			st.S3Check, st.S3ErrorCode, st.S3HTTPStatus = s.check.verdict.String(), s.check.code, s.check.status
			st.S3CheckedAt = timePtr(s.check.at)
		}
		if s.lastErr != nil {
			st.LastError, st.LastErrorHTTPStatus, st.LastErrorCode = publicReason(s.lastErr)
			st.LastErrorAt = timePtr(s.lastErrAt)
		}
		if s.failures > 0 && s.retryAt.After(now) {
			st.NextAttempt = timePtr(s.retryAt)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.Profile, b.Profile) })
	return out
}

func timePtr(t time.Time) *time.Time {
	u := t.UTC().Round(0)
	return &u
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
