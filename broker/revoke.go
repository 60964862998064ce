package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// ErrNothingToRevoke: Revoke found no key the profile holds.
var ErrNothingToRevoke = errors.New("the profile holds no key to revoke")

// Revocation reports what Cache.Revoke did. It holds no secret.
type Revocation struct {
	Profile string `json:"profile"`
	// RevokedAccessKeyID is the key revoked upstream and no longer served.
	RevokedAccessKeyID string `json:"revokedAccessKeyId"`
	// AlreadyGone is set when upstream did not know the key (404): it was
	// revoked or deleted before.
	AlreadyGone bool `json:"alreadyGone,omitempty"`
	// RevokedWarmingAccessKeyID is the key that was warming up when Revoke
	// ran (see CacheOptions.KeyWarmup): it is revoked too, never served.
	RevokedWarmingAccessKeyID string `json:"revokedWarmingAccessKeyId,omitempty"`
	// NewAccessKeyID and NewExpiration describe the key minted in its
	// place, if the mint succeeded.
	NewAccessKeyID string     `json:"newAccessKeyId,omitempty"`
	NewExpiration  *time.Time `json:"newExpiration,omitempty"`
	// MintError says why no new key was minted. The cache keeps retrying
	// with backoff; clients get 503 until a mint succeeds.
	MintError string `json:"mintError,omitempty"`
	// NotHeld is set by ForgetRevoked when the profile no longer held the
	// key (it had been replaced already): nothing was dropped or minted.
	NotHeld bool `json:"notHeld,omitempty"`
}

// RevokeOwn is Revoke with the profile's own credential: the daemon's
// admin endpoint never takes an API token from its caller.
func (c *Cache) RevokeOwn(ctx context.Context, profile string) (*Revocation, error) {
	return c.Revoke(ctx, profile, "")
}

// ForgetRevoked is for a key its caller has revoked upstream itself (with
// a credential the daemon never sees): if the profile still serves or holds
// accessKeyID, it stops serving it and mints a new one at once, as Revoke
// does after its upstream call. When the key is no longer held the
// Revocation says NotHeld and nothing changes.
func (c *Cache) ForgetRevoked(ctx context.Context, profile, accessKeyID string) (*Revocation, error) {
	if accessKeyID == "" {
		return nil, errors.New("no access key id to forget")
	}
	return c.revokeWith(ctx, profile, revokeOp{forget: accessKeyID})
}

// Revoke revokes the profile's current key upstream, stops serving it, and
// mints a new one at once, for incident response. apiToken is the API
// access token to revoke with; "" means the profile's own (see
// cwapi.Client.Revoker).
//
// It runs in the profile's singleflight: it waits for a mint in flight to
// end and then revokes the key that mint left, and clients that find no key
// while it runs wait for the fresh key it mints. Once started it finishes
// even if ctx ends (bounded by MintTimeout per upstream call).
//
// When upstream refuses the revocation the key is kept and served, and the
// error says why. When the revocation succeeds but the new mint fails, the
// error is nil and Revocation.MintError is set.
func (c *Cache) Revoke(ctx context.Context, profile, apiToken string) (*Revocation, error) {
	return c.revokeWith(ctx, profile, revokeOp{apiToken: apiToken})
}

// revokeOp is what revokeWith does: revoke target upstream with apiToken
// ("" for the profile's own), or, with forget set, only drop that key,
// which the caller revoked upstream itself.
type revokeOp struct {
	apiToken string
	forget   string
	// target is the id of the key served (or else held) when Revoke was
	// called; "" when there was none, and then the key a mint in flight
	// leaves is the target.
	target string
}

func (c *Cache) revokeWith(ctx context.Context, profile string, op revokeOp) (*Revocation, error) {
	e := c.lookup(profile)
	if e == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProfile, profile)
	}
	if e.revoker == nil && op.forget == "" {
		return nil, fmt.Errorf("profile %q: %w", profile, cwapi.ErrRevokeTokenRequired)
	}
	if op.forget == "" {
		if k := e.state.Load().held(c.now()); k != nil {
			op.target = k.AccessKeyID
		}
	}
	for {
		var (
			ran bool
			rev *Revocation
			err error
		)
		ch := e.sf.DoChan("", func() (any, error) {
			ran = true
			var s *state
			s, rev, err = c.revoke(ctx, e, op)
			return s, nil
		})
		select {
		case <-ch:
			if ran {
				return rev, err
			}
			// We joined a flight already running (a mint, or another
			// revoke); then revoke the target, or the key the mint left.
		case <-ctx.Done():
			return nil, fmt.Errorf("revoking the key of %q: %w", profile, ctx.Err())
		}
	}
}

// revokeUpstream revokes id with apiToken. gone reports that upstream no
// longer knew it (404), which counts as revoked.
func (c *Cache) revokeUpstream(ctx context.Context, e *entry, apiToken, id string) (gone bool, err error) {
	rctx, cancel := upstreamContext(ctx, c.ctx)
	defer cancel()
	err = e.revoker.Revoke(rctx, apiToken, id)
	var api *cwapi.APIError
	if errors.As(err, &api) && api.StatusCode == http.StatusNotFound {
		return true, nil
	}
	return false, err
}

// revoke does Revoke's work inside e.sf. It returns the state
// the flight's other callers get.
//
// A revoke targets one key id: repeating it, or a second revoke started
// while it ran, finds that id among the last revocation's and returns the
// same Revocation without touching upstream. A key that was warming up
// (see CacheOptions.KeyWarmup) is revoked with the served one: the cache
// never stops holding a live key it minted without revoking it. If that
// second revocation fails, the warming key is not dropped but served at
// once in place of the revoked one (it is valid and nobody has seen it).
func (c *Cache) revoke(ctx context.Context, e *entry, op revokeOp) (*state, *Revocation, error) {
	old := e.state.Load()
	id := op.target
	if op.forget != "" {
		id = op.forget
	}
	if old.revoked.covers(id) {
		return old, old.revoked, nil // a repeat: already done
	}
	var target, warming *cwapi.Credentials
	switch {
	case id == "":
		target = old.held(c.now()) // the key a first mint left, if any
	case old.key != nil && old.key.AccessKeyID == id:
		target = old.key
	case old.prev != nil && old.prev.AccessKeyID == id:
		target, warming = old.prev, old.key
	case op.forget != "":
		c.log.Warn().Bool("audit", true).Str("event", "revoked_key_not_held").Str("profile", e.name).
			Str("access_key_id", op.forget).Msg("key revoked upstream by an admin is no longer held; nothing to drop")
		return old, &Revocation{Profile: e.name, RevokedAccessKeyID: op.forget, NotHeld: true}, nil
	default:
		// A refresh replaced the target since Revoke was called: revoke
		// it all the same, and leave the newer key alone.
		gone, err := c.revokeUpstream(ctx, e, op.apiToken, id)
		if err != nil {
			return old, nil, fmt.Errorf("revoke key %s of profile %q: %w", id, e.name, err)
		}
		c.log.Warn().Bool("audit", true).Str("event", "key_revoked").Str("profile", e.name).
			Str("access_key_id", id).Bool("already_gone", gone).Msg("key revoked upstream; it was no longer held")
		return old, &Revocation{Profile: e.name, RevokedAccessKeyID: id, AlreadyGone: gone, NotHeld: true}, nil
	}
	if target == nil {
		return old, nil, fmt.Errorf("profile %q: %w", e.name, ErrNothingToRevoke)
	}
	id = target.AccessKeyID
	var gone bool
	if op.forget == "" {
		var err error
		if gone, err = c.revokeUpstream(ctx, e, op.apiToken, id); err != nil {
			c.log.Error().Bool("audit", true).Str("event", "revoke_failed").Str("profile", e.name).
				Str("access_key_id", id).Err(err).Msg("revoking key failed; still serving it")
			return old, nil, fmt.Errorf("revoke key %s of profile %q: %w", id, e.name, err)
		}
	}
	rev := &Revocation{Profile: e.name, RevokedAccessKeyID: id, AlreadyGone: gone}
	c.log.Warn().Bool("audit", true).Str("event", "key_revoked").Str("profile", e.name).
		Str("access_key_id", id).Bool("already_gone", gone).Msg("key revoked upstream")

	dropped := *old
	dropped.revoked = rev
	if warming != nil {
		err := errNoRevoker
		if e.revoker != nil {
			_, err = c.revokeUpstream(ctx, e, op.apiToken, warming.AccessKeyID)
		}
		if err != nil {
			// Serve the warming key now rather than drop it live.
			c.log.Warn().Bool("audit", true).Str("event", "warming_key_kept").Str("profile", e.name).
				Str("access_key_id", warming.AccessKeyID).Err(err).Msg("could not revoke the warming key; serving it at once")
			dropped.prev, dropped.prevUntil, dropped.warmUntil = nil, time.Time{}, time.Time{}
			rev.NewAccessKeyID, rev.NewExpiration = warming.AccessKeyID, timePtr(warming.Expires)
			e.state.Store(&dropped)
			return &dropped, rev, nil
		}
		rev.RevokedWarmingAccessKeyID = warming.AccessKeyID
		c.log.Warn().Bool("audit", true).Str("event", "key_revoked").Str("profile", e.name).
			Str("access_key_id", warming.AccessKeyID).Msg("warming key revoked upstream")
	}

	// Stop serving the revoked keys now: a client asking from here on waits
	// for the key this flight mints.
	dropped.key, dropped.prev = nil, nil
	dropped.refreshAt, dropped.serveUntil, dropped.retryAt = time.Time{}, time.Time{}, time.Time{}
	e.state.Store(&dropped)

	next := c.mint(ctx, e, triggerRevoke)
	switch {
	case next.key != nil:
		rev.NewAccessKeyID = next.key.AccessKeyID
		rev.NewExpiration = timePtr(next.key.Expires)
	case next.lastErr != nil:
		rev.MintError = next.lastErr.Error()
	}
	return next, rev, nil
}

// errNoRevoker: a profile without a Revoker cannot revoke its warming key.
var errNoRevoker = errors.New("the profile has no revoker for its warming key")

// covers reports whether r revoked (or forgot) the key id.
func (r *Revocation) covers(id string) bool {
	return r != nil && id != "" && (r.RevokedAccessKeyID == id || r.RevokedWarmingAccessKeyID == id)
}
