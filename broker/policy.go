package broker

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// The cache's timing policy. Every window, margin and backoff the broker
// applies is here; nothing else in the package decides when to mint.
const (
	// RefreshAfter is the fraction of a key's lifetime after which the
	// background refresh replaces it, so a served key keeps at least a third
	// of its life whenever upstream is healthy.
	RefreshAfter = 2.0 / 3.0
	// RefreshJitter moves each refresh up to this fraction of the lifetime
	// earlier (never later), so profiles and nodes do not mint in lockstep.
	RefreshJitter = 0.05

	// ServeMargin is how long before upstream's expiry a key stops being
	// served, absorbing clock skew and request latency. Short keys get a
	// proportionally smaller margin (ServeMarginFraction of the lifetime).
	ServeMargin         = time.Minute
	ServeMarginFraction = 0.1
	// MinUsableLifetime: a freshly minted key with less life than this is
	// treated as a bad reply rather than served.
	MinUsableLifetime = 10 * time.Second
	// PermanentKeyLifetime is how long a key upstream reports as permanent is
	// kept before the broker replaces it. The broker never asks for one.
	PermanentKeyLifetime = time.Hour

	// MintTimeout bounds one upstream mint, wherever it was started.
	MintTimeout = 20 * time.Second

	// DefaultKeyWarmup is the daemon's CacheOptions.KeyWarmup: CoreWeave's
	// object store may refuse a brand-new key for a few seconds while it
	// propagates, so a refreshed key is held back this long and the previous
	// key, which has a third of its life left, is served meanwhile.
	DefaultKeyWarmup = 5 * time.Second
	// DefaultMaxConcurrentRefreshes caps background mints in flight at once.
	// At start-up every profile needs a key: without a cap a node with a
	// thousand profiles would make a thousand simultaneous upstream calls
	// and risk upstream rate limits. Sixteen warms a thousand profiles in
	// about a minute of upstream latency at 1s per mint, and clients asking
	// for a profile still queued never wait for the queue.
	DefaultMaxConcurrentRefreshes = 16

	// Transient failures (network, timeouts, 5xx, malformed replies, a
	// missing token file): exponential backoff from BackoffInitial, doubling
	// to BackoffMax, with equal jitter.
	BackoffInitial = 2 * time.Second
	BackoffMax     = time.Minute
	// A mint that timed out may still have created a key upstream whose
	// reply was lost: an orphan, live until it expires. Mints are not
	// idempotent, so after a timeout the backoff starts here instead, and
	// a stalled upstream is not fed a new orphan every few seconds.
	TimedOutBackoffInitial = 15 * time.Second
	// Upstream refused the credential (401, 403) or the request (other 4xx):
	// the same token will keep failing, so back off much further. A revoked
	// token causes at most one call per step.
	RejectedBackoffInitial = time.Minute
	RejectedBackoffMax     = 15 * time.Minute
	// MaxRetryAfter caps how long a Retry-After header can silence a profile.
	MaxRetryAfter = 15 * time.Minute
	// RetryAfterJitter adds up to this fraction to a Retry-After delay.
	RetryAfterJitter = 0.1
)

// serveMargin is the margin before expiry for a key of the given lifetime.
func serveMargin(lifetime time.Duration) time.Duration {
	return min(ServeMargin, time.Duration(float64(lifetime)*ServeMarginFraction))
}

// schedule computes when a key obtained at now and expiring at expires
// should be refreshed and until when it may be served. r is in [0, 1).
func schedule(now, expires time.Time, r float64) (refreshAt, serveUntil time.Time) {
	lifetime := expires.Sub(now)
	early := time.Duration(float64(lifetime) * RefreshJitter * r)
	refreshAt = now.Add(time.Duration(float64(lifetime)*RefreshAfter) - early)
	serveUntil = expires.Add(-serveMargin(lifetime))
	return refreshAt, serveUntil
}

// backoff returns how long to wait before the next mint after the
// failures-th consecutive failure (failures >= 1) ending in err. r is in
// [0, 1).
func backoff(err error, failures int, r float64) time.Duration {
	var api *cwapi.APIError
	if !errors.As(err, &api) {
		if timedOut(err) {
			return exponential(TimedOutBackoffInitial, BackoffMax, failures, r)
		}
		return exponential(BackoffInitial, BackoffMax, failures, r)
	}
	d := exponential(BackoffInitial, BackoffMax, failures, r)
	if !api.Temporary() {
		d = exponential(RejectedBackoffInitial, RejectedBackoffMax, failures, r)
	}
	// Retry-After is honoured, but never shortens a rejected profile's wait.
	if ra := min(api.RetryAfter, MaxRetryAfter); ra > 0 && (api.Temporary() || ra > d) {
		d = ra + time.Duration(float64(ra)*RetryAfterJitter*r)
	}
	return d
}

// exponential doubles initial per failure up to max, then keeps a random
// half of it ("equal jitter"): the wait is in [d/2, d).
func exponential(initial, max time.Duration, failures int, r float64) time.Duration {
	d := initial
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + time.Duration(float64(d/2)*r)
}

// timedOut reports whether err ended a call whose outcome upstream is
// unknown: a deadline or a network timeout.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
