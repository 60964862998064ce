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

// revokeOp is what revokeWith does: revoke upstream with apiToken ("" for
// the profile's own), or, with forget set, only drop that key, which the
// caller revoked upstream itself.
type revokeOp struct {
	apiToken string
	forget   string
}

func (c *Cache) revokeWith(ctx context.Context, profile string, op revokeOp) (*Revocation, error) {
	e := c.lookup(profile)
	if e == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProfile, profile)
	}
	if e.revoker == nil && op.forget == "" {
		return nil, fmt.Errorf("profile %q: %w", profile, cwapi.ErrRevokeTokenRequired)
	}
	for {
		var (
			ran bool
			rev *Revocation
			err error
		)
		ch := c.sf.DoChan(e.flight, func() (any, error) {
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
			// We joined a mint already in flight; revoke the key it left.
		case <-ctx.Done():
			return nil, fmt.Errorf("revoking the key of %q: %w", profile, ctx.Err())
		}
	}
}

// revoke does Revoke's work inside c.sf for e.name. It returns the state
// the flight's other callers get.
func (c *Cache) revoke(ctx context.Context, e *entry, op revokeOp) (*state, *Revocation, error) {
	old := e.state.Load()
	// Revoke the key clients are getting: while a new key warms up, that
	// is the previous one. A key no longer served is still revoked.
	target, _ := old.serve(c.now())
	if target == nil {
		target = old.key
	}
	if op.forget != "" {
		// The caller revoked op.forget upstream: drop it if held at all.
		switch {
		case old.key != nil && old.key.AccessKeyID == op.forget:
			target = old.key
		case old.prev != nil && old.prev.AccessKeyID == op.forget:
			target = old.prev
		default:
			c.log.Warn().Bool("audit", true).Str("event", "revoked_key_not_held").Str("profile", e.name).
				Str("access_key_id", op.forget).Msg("key revoked upstream by an admin is no longer held; nothing to drop")
			return old, &Revocation{Profile: e.name, RevokedAccessKeyID: op.forget, NotHeld: true}, nil
		}
	}
	if target == nil {
		return old, nil, fmt.Errorf("profile %q: %w", e.name, ErrNothingToRevoke)
	}
	id := target.AccessKeyID
	var err error
	if op.forget == "" {
		rctx, cancel := c.upstreamContext(ctx)
		err = e.revoker.Revoke(rctx, op.apiToken, id)
		cancel()
	}
	var api *cwapi.APIError
	gone := errors.As(err, &api) && api.StatusCode == http.StatusNotFound
	if err != nil && !gone {
		c.log.Error().Bool("audit", true).Str("event", "revoke_failed").Str("profile", e.name).
			Str("access_key_id", id).Err(err).Msg("revoking key failed; still serving it")
		return old, nil, fmt.Errorf("revoke key %s of profile %q: %w", id, e.name, err)
	}

	// Stop serving the revoked key now: a client asking from here on waits
	// for the key this flight mints.
	dropped := *old
	dropped.key, dropped.prev = nil, nil
	dropped.refreshAt, dropped.serveUntil, dropped.retryAt = time.Time{}, time.Time{}, time.Time{}
	e.state.Store(&dropped)
	c.log.Warn().Bool("audit", true).Str("event", "key_revoked").Str("profile", e.name).
		Str("access_key_id", id).Bool("already_gone", gone).Msg("key revoked upstream; minting a new one")

	next := c.mint(ctx, e, triggerRevoke)
	rev := &Revocation{Profile: e.name, RevokedAccessKeyID: id, AlreadyGone: gone}
	switch {
	case next.key != nil:
		rev.NewAccessKeyID = next.key.AccessKeyID
		rev.NewExpiration = timePtr(next.key.Expires)
	case next.lastErr != nil:
		rev.MintError = next.lastErr.Error()
	}
	return next, rev, nil
}
