package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// KeyVerifier asks the object store whether it accepts a key, with one
// request (s3check.Checker). It returns nil when the key is accepted; an
// error implementing S3ErrorCode() string and HTTPStatus() int when S3
// answered with an error; any other error when S3 could not be asked.
// Implementations must be safe for concurrent use and honour ctx.
type KeyVerifier interface {
	Check(ctx context.Context, key *cwapi.Credentials) error
}

// CheckObserver is implemented by a ProfileObserver that also wants the
// S3 check's verdicts (for metrics): verdict is "accepted", "refused" or
// "unanswered"; took is from the key's arrival to the verdict.
type CheckObserver interface {
	KeyChecked(verdict string, took time.Duration)
}

// The check's mechanism. Its decisions (how long a key is held, when a
// refresh swaps keys, what counts as propagation) are in policy.go.
//
// Each new key gets one check goroutine, started by mint once the state
// holding the key is stored. It asks S3 until a verdict, at most
// VerifyPropagationLimit after the key's arrival, then stores the state the
// verdict leads to (state.checked) if the profile still holds that key,
// and closes the check's done channel, which wakes the clients waiting out
// a cold key's hold (awaitCheck). Mints and revokes replace a key long
// after its check ended (a refresh comes at two thirds of its life); a key
// they replace earlier (Revoke) ends its check.

// startCheck starts the check of s.key.
func (c *Cache) startCheck(e *entry, s *state) {
	key, obtained, done := s.key, s.check.at, s.check.done
	c.checks.Go(func() {
		defer close(done)
		c.runCheck(e, key, obtained)
	})
}

func (c *Cache) runCheck(e *entry, key *cwapi.Credentials, obtained time.Time) {
	limit := obtained.Add(VerifyPropagationLimit)
	var timer *time.Timer
	for attempt := 1; ; attempt++ {
		if e.state.Load().key != key {
			return // revoked or replaced meanwhile
		}
		// No request outlives the limit: the verdict is due then.
		ctx, cancel := context.WithTimeout(e.ctx, min(VerifyRequestTimeout, limit.Sub(c.now())))
		err := c.verifier.Check(ctx, key)
		cancel()
		if e.ctx.Err() != nil {
			return // the profile was dropped or the cache stopped
		}
		now := c.now()
		v, propagating, code, status := classifyCheck(err)
		if v == checkPending && !now.Before(limit) {
			v = finalVerdict(propagating)
		}
		if v != checkPending {
			c.settleCheck(e, key, v, code, status, err, attempt, now.Sub(obtained))
			return
		}
		wait := min(exponential(VerifyRetryInitial, VerifyRetryMax, attempt, c.rand()), limit.Sub(now))
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-e.ctx.Done():
			return
		case <-timer.C:
		}
		if now := c.now(); !now.Before(limit) {
			c.settleCheck(e, key, finalVerdict(propagating), code, status, err, attempt, now.Sub(obtained))
			return
		}
	}
}

// settleCheck stores the verdict in the profile's state if it still holds
// key, and logs and reports it.
func (c *Cache) settleCheck(e *entry, key *cwapi.Credentials, v checkVerdict, code string, status int, err error, attempts int, took time.Duration) {
	for {
		old := e.state.Load()
		if old.key != key {
			return
		}
		next := old.checked(v, code, status, c.now())
		if e.state.CompareAndSwap(old, &next) {
			break
		}
	}
	if o, ok := e.obs.(CheckObserver); ok {
		o.KeyChecked(v.String(), took)
	}
	switch v {
	case checkAccepted:
		c.log.Info().Str("event", "key_accepted").Str("profile", e.name).Str("access_key_id", key.AccessKeyID).
			Int("attempts", attempts).Dur("after_ms", took).Msg("S3 accepted the new key")
	case checkRefused:
		c.log.Error().Bool("audit", true).Str("event", "key_refused").Str("profile", e.name).
			Str("access_key_id", key.AccessKeyID).Str("s3_error_code", codeOrNone(code)).Int("s3_http_status", status).
			Int("attempts", attempts).Dur("after_ms", took).
			Str("action_needed", refusalHint(code)).
			Msg(fmt.Sprintf("S3 refuses the new key: %s", codeOrNone(code)))
	case checkUnanswered:
		ev := c.log.Warn().Str("event", "key_check_unanswered").Str("profile", e.name).
			Str("access_key_id", key.AccessKeyID).Int("attempts", attempts).Dur("after_ms", took).Err(err)
		if code != "" {
			ev = ev.Str("s3_error_code", code).Int("s3_http_status", status)
		}
		ev.Msg("S3 could not be asked whether it accepts the new key; serving it unchecked")
	}
}

func codeOrNone(code string) string {
	if code == "" {
		return "no error code"
	}
	return code
}

// refusalHint says what an operator should look at for S3's refusal.
func refusalHint(code string) string {
	switch code {
	case "InvalidAccessKeyId":
		return "S3 still does not know the key after " + VerifyPropagationLimit.String() +
			": check CWCREDS_S3_ENDPOINT points at the object store of the API that mints the keys"
	case "SignatureDoesNotMatch":
		return "S3 knows the key but not with the secret upstream returned, or CWCREDS_S3_REGION is wrong"
	case "AccessDenied":
		return "the key's principal may not list buckets (the check is ListBuckets); grant s3:ListAllMyBuckets or unset CWCREDS_S3_ENDPOINT"
	}
	return "see the S3 error code"
}

// awaitCheck waits, for a client that found the newest key held (s), until
// S3 answers for it, the hold ends, or ctx ends; then serves what the
// profile holds.
func (c *Cache) awaitCheck(ctx context.Context, e *entry, s *state) (*cwapi.Credentials, error) {
	timer := time.NewTimer(s.check.holdUntil.Sub(c.now()))
	defer timer.Stop()
	select {
	case <-s.check.done:
	case <-timer.C:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a key for %q: %w", e.name, ctx.Err())
	}
	now := c.now()
	cur := e.state.Load()
	if k, _ := cur.serve(now); k != nil {
		return k, nil
	}
	return nil, cur.unavailable(e.name)
}
