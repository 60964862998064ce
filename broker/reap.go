package broker

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// ReapObserver is implemented by a ProfileObserver that also wants orphan
// reaps (for metrics): result is "ok", "failed" (listing or a revocation
// failed) or "refused" (more candidates than MaxOrphansRevoked: none
// revoked); revoked counts the orphans revoked (404: gone already counts).
type ReapObserver interface {
	OrphansReaped(result string, revoked int)
}

// The reaper's mechanism; what counts as an orphan, and the bounds, are in
// policy.go (orphans, MaxOrphansRevoked, ReapTimeout).
//
// After a mint that timed out, mint calls startReap. The reap runs in its
// own goroutine but inside the profile's singleflight, once the timed-out
// mint's flight has ended: no mint of the profile runs while it lists and
// revokes, so a key being minted is never mistaken for an orphan. Clients
// do not wait for it: a profile that just timed out backs off, and
// clients arriving then are answered at once (Get checks nextMint before
// joining a flight).

func (c *Cache) startReap(e *entry, start, end time.Time) {
	if e.lister == nil || e.revoker == nil || e.lifetime <= 0 {
		c.log.Warn().Bool("audit", true).Str("event", "orphan_possible").Str("profile", e.name).
			Str("source", string(e.source)).Time("minted_from", start).Time("gave_up_at", end).
			Msg("the timed-out mint may have created a key upstream; this profile cannot list its keys " +
				"(oidc and saml tokens cannot; api-token keys carry no attributes), so such a key stays live until it expires")
		return
	}
	c.checks.Go(func() {
		for {
			ran := false
			ch := e.sf.DoChan("", func() (any, error) {
				ran = true
				c.reap(e, start, end)
				return e.state.Load(), nil
			})
			select {
			case <-ch:
				if ran {
					return
				}
				// We joined the timed-out mint's flight (or a later one):
				// go again for a flight of our own.
			case <-e.ctx.Done():
				return
			}
		}
	})
}

// reap lists the profile's keys and revokes the orphans the mint that ran
// from start to end left, within ReapTimeout, logging what it did.
func (c *Cache) reap(e *entry, start, end time.Time) {
	ctx, cancel := context.WithTimeout(e.ctx, ReapTimeout)
	defer cancel()
	report := func(result string, revoked int) {
		if o, ok := e.obs.(ReapObserver); ok {
			o.OrphansReaped(result, revoked)
		}
	}
	keys, err := e.lister.ListOwnKeys(ctx)
	if err != nil {
		c.log.Error().Bool("audit", true).Str("event", "orphan_reap_failed").Str("profile", e.name).Err(err).
			Msg("listing the profile's keys to find the key a timed-out mint may have left failed; it stays live until it expires")
		report("failed", 0)
		return
	}
	s := e.state.Load()
	held := func(id string) bool {
		return s.key != nil && s.key.AccessKeyID == id || s.prev != nil && s.prev.AccessKeyID == id
	}
	found := orphans(keys, held, start, end, e.lifetime)
	if len(found) > MaxOrphansRevoked {
		ids := make([]string, len(found))
		for i, k := range found {
			ids[i] = k.AccessKeyID
		}
		c.log.Error().Bool("audit", true).Str("event", "orphan_reap_refused").Str("profile", e.name).
			Strs("access_key_ids", ids).Int("max", MaxOrphansRevoked).
			Str("action_needed", "another process mints keys with this node name and profile; give each daemon its own CWCREDS_NODE_NAME").
			Msg("more keys match the timed-out mint than it can have created; revoking none")
		report("refused", 0)
		return
	}
	revoked := 0
	for _, k := range found {
		err := e.revoker.Revoke(ctx, "", k.AccessKeyID)
		var api *cwapi.APIError
		gone := errors.As(err, &api) && api.StatusCode == http.StatusNotFound
		if gone {
			err = nil
		}
		if err != nil {
			c.log.Error().Bool("audit", true).Str("event", "orphan_revoke_failed").Str("profile", e.name).
				Str("access_key_id", k.AccessKeyID).Err(err).Msg("revoking an orphaned key failed; it stays live until it expires")
			report("failed", revoked)
			return
		}
		revoked++
		c.log.Warn().Bool("audit", true).Str("event", "orphan_revoked").Str("profile", e.name).
			Str("access_key_id", k.AccessKeyID).Str("expires", k.Expires.UTC().Format(time.RFC3339)).Bool("already_gone", gone).
			Msg("revoked a key a timed-out mint created upstream but never delivered")
	}
	c.log.Info().Str("event", "orphan_reap").Str("profile", e.name).Int("listed", len(keys)).
		Int("revoked", revoked).Msg("looked for keys a timed-out mint left upstream")
	report("ok", revoked)
}
