package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"
)

// CacheProfile is one profile the cache serves.
type CacheProfile struct {
	Name   string
	Source Source
	Minter Minter
	// Revoker revokes the profile's keys upstream, for Cache.Revoke. Nil
	// means Revoke refuses for this profile.
	Revoker Revoker
}

// CacheOptions tunes a Cache. The zero value of each field means the default.
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
}

// Cache holds one key per profile and keeps it fresh.
//
// Get is safe for concurrent use. Its hit path is one atomic load and a clock
// read: it takes no lock that a mint holds. Concurrent misses for one profile
// share one upstream call, and a caller whose context ends leaves without
// cancelling that call. Run refreshes keys in the background; without Run
// keys are still minted on demand, but only when none is valid.
type Cache struct {
	entries map[string]*entry // fixed at construction: read without a lock
	sf      singleflight.Group
	now     func() time.Time
	rand    func() float64
	log     zerolog.Logger

	// closing is closed when Run's context ends; it cancels in-flight mints.
	closing   chan struct{}
	closeOnce sync.Once
}

type entry struct {
	name    string
	source  Source
	minter  Minter
	revoker Revoker
	obs     ProfileObserver
	state   atomic.Pointer[state]
	// changed wakes the refresh loop when a mint it did not start changes
	// the state (capacity 1; sends never block).
	changed chan struct{}
}

// state is an immutable snapshot of one profile; a new one replaces it
// after every mint attempt.
type state struct {
	key         *Credentials // nil until the first successful mint
	obtained    time.Time
	refreshAt   time.Time
	serveUntil  time.Time
	lastErr     error
	lastErrAt   time.Time
	failures    int       // consecutive failed mints
	retryAt     time.Time // no mint before this while failing
	lastRefresh time.Time
	mintLatency time.Duration // of the last successful mint
}

// servable reports whether s.key may be handed to a client at now.
func (s *state) servable(now time.Time) bool {
	return s.key != nil && now.Before(s.serveUntil)
}

// nextMint is the earliest time a mint may start. This one predicate gates
// the refresh loop, client-triggered misses and the mint itself.
func (s *state) nextMint(now time.Time) time.Time {
	if s.servable(now) && s.refreshAt.After(s.retryAt) {
		return s.refreshAt
	}
	return s.retryAt // zero when nothing has failed: mint now
}

func (s *state) unavailable(profile string) error {
	return &UnavailableError{Profile: profile, Err: s.lastErr, RetryAt: s.retryAt}
}

// reason says why s cannot be served at now, or "" when it can. Like
// UnavailableError's, the text holds no secret.
func (s *state) reason(profile string, now time.Time) string {
	switch {
	case s.servable(now):
		return ""
	case s.lastErr != nil:
		return s.unavailable(profile).Error()
	case s.key == nil:
		return "no key minted yet"
	default:
		return "the key is too close to expiry to serve and no newer key has been minted"
	}
}

// NewCache returns a cache for profiles. Profile names must be unique.
func NewCache(profiles []CacheProfile, opts ...func(*CacheOptions)) (*Cache, error) {
	o := CacheOptions{Logger: zerolog.Nop()}
	for _, fn := range opts {
		fn(&o)
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	c := &Cache{
		entries: make(map[string]*entry, len(profiles)),
		now:     o.Now,
		rand:    o.Rand,
		log:     o.Logger,
		closing: make(chan struct{}),
	}
	if o.Now == nil {
		c.now = time.Now
	}
	if o.Rand == nil {
		c.rand = rand.Float64
	}
	for _, p := range profiles {
		if p.Name == "" || p.Minter == nil {
			return nil, fmt.Errorf("cache profile %q: name and minter are required", p.Name)
		}
		if _, dup := c.entries[p.Name]; dup {
			return nil, fmt.Errorf("cache profile %q: duplicate name", p.Name)
		}
		e := &entry{name: p.Name, source: p.Source, minter: p.Minter, revoker: p.Revoker,
			obs: o.Observer.Profile(p.Name), changed: make(chan struct{}, 1)}
		e.state.Store(&state{})
		c.entries[p.Name] = e
	}
	return c, nil
}

// Get returns a key for profile that stays valid for at least the serve
// margin. A warm profile answers from memory. A cold one waits for the one
// shared mint, or for ctx. When no key can be served the error is an
// *UnavailableError (errors.Is ErrNoValidKey) saying why; an unconfigured
// profile gives ErrUnknownProfile.
func (c *Cache) Get(ctx context.Context, profile string) (*Credentials, error) {
	e := c.entries[profile]
	if e == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProfile, profile)
	}
	now := c.now()
	s := e.state.Load()
	if s.servable(now) {
		if s.failures == 0 {
			e.obs.Hit()
		} else {
			e.obs.StaleHit() // refreshing is failing; the old key is still valid
		}
		return s.key, nil
	}
	e.obs.Miss()
	if now.Before(s.nextMint(now)) {
		return nil, s.unavailable(profile) // backing off: no upstream call
	}
	select {
	case r := <-c.sf.DoChan(profile, func() (any, error) { return c.mint(ctx, e, triggerRequest), nil }):
		s := r.Val.(*state)
		if s.servable(c.now()) {
			return s.key, nil
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
// behalf of every caller sharing a flight: detached from ctx's
// cancellation, bounded by MintTimeout and cancelled by Run's shutdown.
func (c *Cache) upstreamContext(ctx context.Context) (context.Context, context.CancelFunc) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), MintTimeout)
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-uctx.Done():
		}
	}()
	return uctx, cancel
}

// mint runs one upstream mint for e, unless another one finished meanwhile,
// and stores the outcome. It is only called inside c.sf for e.name, so at
// most one runs per profile. The mint is detached from ctx's cancellation
// (other callers share it) but bounded by MintTimeout and stopped by Run's
// shutdown.
func (c *Cache) mint(ctx context.Context, e *entry, trigger string) *state {
	start := c.now()
	old := e.state.Load()
	if start.Before(old.nextMint(start)) {
		return old // a flight that just ended already did the work
	}
	mctx, cancel := c.upstreamContext(ctx)
	defer cancel()

	e.obs.MintStarted()
	key, err := e.minter.Mint(mctx)
	e.obs.MintDone(err)
	now := c.now()
	if err == nil {
		key, err = c.checkKey(e, key, now)
	}
	next := *old
	if err != nil {
		if errors.Is(mctx.Err(), context.Canceled) && isClosing(c.closing) {
			err = errors.New("broker is shutting down")
		}
		next.lastErr = err
		next.lastErrAt = now
		next.failures++
		wait := backoff(err, next.failures, c.rand())
		next.retryAt = now.Add(wait)
		c.logFailure(e, &next, err, wait, now, trigger)
	} else {
		next.key = key
		next.obtained = now
		next.lastRefresh = now
		next.mintLatency = now.Sub(start)
		next.refreshAt, next.serveUntil = schedule(now, key.Expires, c.rand())
		next.failures = 0
		next.retryAt = time.Time{}
		ev := c.log.Info().Bool("audit", true).Str("event", "key_minted").
			Str("profile", e.name).Str("source", string(e.source)).Str("trigger", trigger).
			EmbedObject(key).Dur("latency_ms", next.mintLatency).Time("refresh_at", next.refreshAt)
		if old.key != nil {
			ev = ev.Str("previous_access_key_id", old.key.AccessKeyID)
		}
		ev.Msg("key minted")
	}
	e.state.Store(&next)
	select {
	case e.changed <- struct{}{}:
	default:
	}
	return &next
}

// checkKey rejects a minted key that cannot be served and gives a key that
// upstream called permanent a finite life in the cache.
func (c *Cache) checkKey(e *entry, key *Credentials, now time.Time) (*Credentials, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: minter returned no key", ErrBadReply)
	}
	if key.Expires.IsZero() {
		c.log.Warn().Str("profile", e.name).Str("access_key_id", key.AccessKeyID).
			Msg("upstream minted a permanent key; it will be replaced like a temporary one")
		k := *key
		k.Expires = now.Add(PermanentKeyLifetime).Truncate(time.Second)
		return &k, nil
	}
	if left := key.Expires.Sub(now); left < MinUsableLifetime {
		return nil, fmt.Errorf("%w: minted key %s expires in %s", ErrBadReply, key.AccessKeyID, left.Round(time.Second))
	}
	return key, nil
}

func (c *Cache) logFailure(e *entry, s *state, err error, wait time.Duration, now time.Time, trigger string) {
	ev := c.log.Warn()
	var api *APIError
	if errors.As(err, &api) && !api.Temporary() {
		ev = c.log.Error() // a revoked or wrong credential needs a person
	}
	ev.Bool("audit", true).Str("event", "mint_failed").
		Str("profile", e.name).Str("source", string(e.source)).Str("trigger", trigger).Err(err).
		Int("failures", s.failures).Dur("retry_in_ms", wait).
		Bool("serving_previous_key", s.servable(now)).Msg("mint failed")
}

func isClosing(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Run warms every profile and keeps its key fresh until ctx ends, then
// cancels in-flight mints and returns once every refresh goroutine has
// exited. Call it once.
func (c *Cache) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, e := range c.entries {
		wg.Go(func() { c.refreshLoop(ctx, e) })
	}
	<-ctx.Done()
	c.closeOnce.Do(func() { close(c.closing) })
	wg.Wait()
}

func (c *Cache) refreshLoop(ctx context.Context, e *entry) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := c.now()
		if wait := e.state.Load().nextMint(now).Sub(now); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-e.changed:
				continue
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		// Wait for the mint even if ctx ends: shutdown cancels it through
		// c.closing, and Run must not return while it still writes state.
		<-c.sf.DoChan(e.name, func() (any, error) { return c.mint(ctx, e, triggerRefresh), nil })
		// Drain the wake-up our own mint queued.
		select {
		case <-e.changed:
		default:
		}
	}
}

// Status reports every profile, sorted by name.
func (c *Cache) Status() []Status {
	now := c.now()
	out := make([]Status, 0, len(c.entries))
	for _, e := range c.entries {
		s := e.state.Load()
		st := Status{Profile: e.name, Source: e.source, Healthy: s.servable(now), ConsecutiveFailures: s.failures,
			Reason: s.reason(e.name, now)}
		if s.key != nil {
			st.Principal = s.key.Principal
			st.AccessKeyID = s.key.AccessKeyID
			st.Expiration = timePtr(s.key.Expires)
			st.RefreshAt = timePtr(s.refreshAt)
			st.LastRefresh = timePtr(s.lastRefresh)
			st.LastMintLatencySeconds = s.mintLatency.Seconds()
		}
		if s.lastErr != nil {
			st.LastError = s.lastErr.Error()
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
