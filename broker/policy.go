package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// The cache's policy: every number (below) and every decision (the state
// methods further down) the broker applies: which key to serve, when to
// mint, when a new key takes over (warm-up), the minimum usable lifetime,
// permanent keys, backoff, the upstream budget's order, when a workload
// identity refreshes or is dropped, the S3 check's verdicts and swap, and
// which keys count as orphans. Nothing else in the package decides these;
// the rest is plumbing: the cache and its refresh loops (cache.go,
// workload.go), the budget's token bucket (budget.go), the S3 check's and
// the reaper's calls (verify.go, reap.go), reporting (status.go) and
// revocation (revoke.go).
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
	// kept before the broker replaces it. The broker never asks for one, and
	// never hands one out: the cache gives it this finite Expires (see
	// usableKey), so every key a Cache serves has a non-zero Expires.
	PermanentKeyLifetime = time.Hour

	// MintTimeout bounds one upstream mint, wherever it was started.
	MintTimeout = 20 * time.Second

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

	// DefaultMaxWorkloadIdentities bounds the workload identities cached
	// (CacheOptions.MaxWorkloadIdentities): ten thousand is far more than
	// the pods of one node, and a few tens of megabytes at most.
	DefaultMaxWorkloadIdentities = 10000
	// maxTokensPerIdentity bounds the token hashes remembered per identity
	// (identity sharing: rotated tokens and other pods' tokens of one
	// service account). A forgotten token is checked again on its next use.
	maxTokensPerIdentity = 16

	// The upstream budget (CacheOptions.UpstreamQPS) serves a mint a
	// client is waiting for first: a background mint (refresh, warm-up,
	// retry) takes a token only while no client mint is queued, looking
	// again every backgroundPoll, and none at all during a rateLimitPause.
	backgroundPoll = 100 * time.Millisecond

	// DefaultMaxPendingTokensPerPeer bounds, per peer (a local user, or a
	// pod's address; see Peer), the workload identities it brought into
	// the cache that hold no key: their first mint is queued or in flight,
	// or upstream refused it (CacheOptions.MaxPendingTokensPerPeer). In
	// token mode the daemon checks a token's claims but not its signature,
	// so this bound is what limits the upstream mints (and budget) one peer
	// can spend on forged tokens, and the place in the queue it can take
	// ahead of other workloads' first mints. A pod presents one token at a
	// time, two around its rotation, each holding no key for the second its
	// first mint takes (or for its life if CoreWeave refuses it); a local
	// user, or the node's address that host-network pods share, may front
	// several workloads starting at once. Sixteen leaves room for eight
	// such workloads in the middle of a rotation while upstream refuses them
	// all, and costs a flooding peer's victims at most sixteen upstream
	// calls of queue (a third of a second of the default budget).
	DefaultMaxPendingTokensPerPeer = 16
	// PendingTokenHold is how long an identity that leaves the cache
	// without ever holding a key (its token expired, or the table was
	// full) still counts against its peer's bound: without it a peer could
	// free its bound at once with tokens that expire in a second, and spend
	// sixteen mints a second. With it a peer starts at most
	// DefaultMaxPendingTokensPerPeer refused mints per hold, and the hold
	// matches the backoff of a refused token (RejectedBackoffInitial).
	PendingTokenHold = RejectedBackoffInitial
)

// rateLimitPause is how long background mints stop after a mint failed
// with err: for a 429, its Retry-After capped by MaxRetryAfter, or
// BackoffInitial without one; 0 for every other outcome. Client mints are
// not paused: each profile's own backoff spaces them.
func rateLimitPause(err error) time.Duration {
	var api *cwapi.APIError
	if !errors.As(err, &api) || api.StatusCode != http.StatusTooManyRequests {
		return 0
	}
	if d := min(api.RetryAfter, MaxRetryAfter); d > 0 {
		return d
	}
	return BackoffInitial
}

// firstKey reports whether a successful mint on old gives its entry its
// first key. For a workload identity that is when its token proved genuine
// (upstream accepted it; S3 may not have yet): from then on it no longer
// counts against the bound of the peer that brought it
// (DefaultMaxPendingTokensPerPeer), even after that key expires, and a
// full table drops it only after every identity that never held a key.
func firstKey(old *state) bool { return old.key == nil }

// state is an immutable snapshot of one profile; a new one replaces it
// after every mint attempt.
type state struct {
	key         *cwapi.Credentials // the newest key; nil until the first successful mint
	obtained    time.Time
	refreshAt   time.Time
	serveUntil  time.Time
	lastErr     error
	lastErrAt   time.Time
	failures    int       // consecutive failed mints
	retryAt     time.Time // no mint before this while failing
	lastRefresh time.Time
	mintLatency time.Duration // of the last successful mint

	// While key warms up, prev (the key it replaces) is served until
	// warmUntil or prevUntil (prev's own serve limit), whichever comes
	// first. prev is nil when key was served at once.
	prev      *cwapi.Credentials
	prevUntil time.Time
	warmUntil time.Time

	// revoked is the last Revoke's result, so that a repeat of it is a
	// no-op that returns the same result.
	revoked *Revocation

	// check is the S3 check of key (CacheOptions.Verifier); zero without
	// a Verifier.
	check keyCheck
}

// held is the key a revoke targets: the one served at now, else the newest
// held (no longer servable, but live upstream); nil when there is none.
func (s *state) held(now time.Time) *cwapi.Credentials {
	if k, _ := s.serve(now); k != nil {
		return k
	}
	return s.key
}

// serve returns the key to hand a client at now and until when it may be
// served, or nil when there is none. It is the one place that decides which
// key is served: Get, Status, the refresh schedule and the next warm-up
// all ask it.
func (s *state) serve(now time.Time) (*cwapi.Credentials, time.Time) {
	switch {
	case s.key == nil:
		return nil, time.Time{} // never minted, or Revoke dropped it (and prev with it)
	case s.prev != nil && now.Before(s.warmUntil) && now.Before(s.prevUntil):
		return s.prev, s.prevUntil
	case s.holding(now):
		return nil, time.Time{} // a first key S3 has not accepted yet
	case now.Before(s.serveUntil):
		return s.key, s.serveUntil
	}
	return nil, time.Time{}
}

// servable reports whether some key may be handed to a client at now.
func (s *state) servable(now time.Time) bool {
	k, _ := s.serve(now)
	return k != nil
}

// takeover is when key starts being served: at once unless it warms up.
func (s *state) takeover() time.Time {
	if s.prev == nil {
		return s.obtained
	}
	return minTime(s.warmUntil, s.prevUntil)
}

// nextMint is the earliest time a mint may start. This one predicate gates
// the refresh loop, client-triggered misses and the mint itself.
func (s *state) nextMint(now time.Time) time.Time {
	if (s.servable(now) || s.holding(now)) && s.refreshAt.After(s.retryAt) {
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
	case s.holding(now):
		return "a new key is being checked against S3 (at most " + VerifyColdWait.String() + ")"
	case s.lastErr != nil:
		return s.unavailable(profile).Error()
	case s.key == nil:
		return "no key minted yet"
	default:
		return "the key is too close to expiry to serve and no newer key has been minted"
	}
}

// minted is the state after a mint that ended at now with key (already
// checked by usableKey) and started at start. r is in [0, 1).
//
// The warm-up choice: the new key waits warmup before it is served only in
// place of a key clients are getting now, so a first key, a key minted
// while no other can be served, and a key that replaces a revoked one
// (revoked: never serve the old one again) are served at once.
func (s *state) minted(key *cwapi.Credentials, start, now time.Time, r float64, warmup time.Duration, revoked bool) state {
	next := *s
	next.key = key
	next.obtained = now
	next.lastRefresh = now
	next.mintLatency = now.Sub(start)
	next.refreshAt, next.serveUntil = schedule(now, key.Expires, r)
	next.failures = 0
	next.retryAt = time.Time{}
	next.prev, next.prevUntil, next.warmUntil = nil, time.Time{}, time.Time{}
	if prev, until := s.serve(now); prev != nil && warmup > 0 && !revoked {
		next.prev, next.prevUntil, next.warmUntil = prev, until, now.Add(warmup)
	}
	return next
}

// identityPlan is the background plan of a workload identity holding a
// token that expires at tokenExpires: at at, mint (refresh) or, when mint
// is false, drop the identity. The decisions:
//
//   - An identity is dropped when its newest token expires: a request is
//     never answered for an expired token, and no request can reach the
//     identity without one. Its key is forgotten; upstream it stays valid
//     until its own expiry (a key may outlive the token that bought it,
//     within DURATION, since CoreWeave sets its life at the mint and an
//     OIDC-bought key cannot be revoked without an API token; but cwcreds
//     never serves it past the last token).
//   - It is refreshed like a profile's key (RefreshAfter, backoff), with
//     the newest token, only while that token outlives the refresh time,
//     and only once it has held a key: an identity whose first mint failed
//     is retried by its next request (after the backoff), never in the
//     background, so a rejected token costs at most one upstream call per
//     backoff step, and only while its holder keeps asking.
func (s *state) identityPlan(tokenExpires, now time.Time) (at time.Time, mint bool) {
	if !now.Before(tokenExpires) {
		return now, false
	}
	if s.key == nil {
		return tokenExpires, false
	}
	if next := s.nextMint(now); next.Before(tokenExpires) {
		return next, true
	}
	return tokenExpires, false
}

// failed is the state after a mint that failed at now with err, and how
// long the profile now backs off. A still-servable key stays served.
func (s *state) failed(err error, now time.Time, r float64) (state, time.Duration) {
	next := *s
	next.lastErr = err
	next.lastErrAt = now
	next.failures++
	wait := backoff(err, next.failures, r)
	next.retryAt = now.Add(wait)
	return next, wait
}

// usableKey rejects a minted key that cannot be served (none, or less than
// MinUsableLifetime left) and gives a key upstream called permanent (zero
// Expires) the finite life PermanentKeyLifetime, reporting that it did.
func usableKey(key *cwapi.Credentials, now time.Time) (_ *cwapi.Credentials, permanent bool, _ error) {
	if key == nil {
		return nil, false, fmt.Errorf("%w: minter returned no key", cwapi.ErrBadReply)
	}
	if key.Expires.IsZero() {
		k := *key
		k.Expires = now.Add(PermanentKeyLifetime).Truncate(time.Second)
		return &k, true, nil
	}
	if left := key.Expires.Sub(now); left < MinUsableLifetime {
		return nil, false, fmt.Errorf("%w: minted key %s expires in %s", cwapi.ErrBadReply, key.AccessKeyID, left.Round(time.Second))
	}
	return key, false, nil
}

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

// The S3 check (CacheOptions.Verifier): every new key is tried against
// the object store before it is served, because S3 may refuse a key for a
// few seconds after it is minted (InvalidAccessKeyId) while it propagates.
const (
	// VerifyColdWait is the longest a key with no predecessor (a cold
	// profile, or the key Revoke mints) is held back, from its arrival,
	// while S3 has not accepted it; then it is served anyway. The tightest
	// client budget is aws-sdk-go-v2's IMDS client: three 500 ms attempts
	// with up to 1 s of backoff between them, about 2.5 s in all. A 2 s
	// hold plus a typical sub-second mint fits it, and fits with room rclone
	// (1 s x 4), the JS SDK (1 s x 4, 1 s apart) and botocore (2 s x 3,
	// 1 s apart): a client whose first attempt times out gets the key on a
	// retry instead of failing. The hold is an absolute time per key, not
	// per request, so retries never restart it.
	VerifyColdWait = 2 * time.Second
	// VerifyPropagationLimit is how long after a key's arrival S3's
	// InvalidAccessKeyId still counts as propagation, and how long the
	// check keeps asking an S3 that does not answer. CoreWeave's Terraform
	// provider polls a new key for up to a minute; past that the key is
	// reported as refused (or unanswered). A refresh's previous key is
	// served meanwhile, so the limit costs clients nothing.
	VerifyPropagationLimit = time.Minute
	// The check retries with exponential backoff from VerifyRetryInitial
	// to VerifyRetryMax (equal jitter): four or five tries inside
	// VerifyColdWait, so a key is served within a second of S3 accepting
	// it; at most about a hundred ListBuckets for a key S3 never accepts.
	VerifyRetryInitial = 250 * time.Millisecond
	VerifyRetryMax     = time.Second
	// VerifyRequestTimeout bounds one check request.
	VerifyRequestTimeout = 5 * time.Second
)

// checkVerdict is where the S3 check of a key stands.
type checkVerdict int

const (
	checkNone       checkVerdict = iota // the key is not checked (no Verifier)
	checkPending                        // asking S3
	checkAccepted                       // S3 accepted the key
	checkRefused                        // S3 refused it: an error other than propagation, or InvalidAccessKeyId past the limit
	checkUnanswered                     // S3 could not be asked until the limit (network, timeouts, 5xx)
)

// String names the verdict in Status.S3Check and metrics.
func (v checkVerdict) String() string {
	return [...]string{"", "checking", "accepted", "refused", "unanswered"}[v]
}

// keyCheck is the S3 check of a state's key.
type keyCheck struct {
	verdict checkVerdict
	code    string // S3's error code of the last refusal (or unanswered reply), sanitised
	status  int    // its HTTP status; 0 when S3 did not answer
	at      time.Time
	// holdUntil: while pending, a key with no predecessor is not served
	// before this (VerifyColdWait after its arrival).
	holdUntil time.Time
	// done is closed once the verdict is no longer pending, for the
	// clients waiting out the hold.
	done chan struct{}
}

// holding reports whether the newest key is held back at now: it has no
// predecessor to serve meanwhile and S3 has not yet answered for it.
func (s *state) holding(now time.Time) bool {
	return s.key != nil && s.prev == nil && s.check.verdict == checkPending && now.Before(s.check.holdUntil)
}

// checking is the state right after minted, with a Verifier: the new key's
// check starts. A key replacing a servable one waits as a warm-up does
// (the cache sets KeyWarmup to VerifyPropagationLimit); one with no
// predecessor is held up to VerifyColdWait.
func (s *state) checking(now time.Time) state {
	next := *s
	next.check = keyCheck{verdict: checkPending, at: now, done: make(chan struct{})}
	if next.prev == nil {
		next.check.holdUntil = now.Add(VerifyColdWait)
	}
	return next
}

// checked is the state once the check of the newest key ends at now. The
// swap rule: a refresh's previous key gives way at once when S3 accepts
// the new key or cannot be asked (an unreachable S3 never holds a key back
// past the limit); when S3 refuses the new key, the previous one (which
// S3 took) stays served to its own serve limit, since waiting will not fix
// the new one and the old one works. A held key with no predecessor is
// served at once on any verdict.
func (s *state) checked(v checkVerdict, code string, status int, now time.Time) state {
	next := *s
	next.check.verdict, next.check.code, next.check.status, next.check.at = v, code, status, now
	next.check.holdUntil = time.Time{}
	if next.prev != nil {
		if v == checkRefused {
			next.warmUntil = next.prevUntil
		} else {
			next.warmUntil = now
		}
	}
	return next
}

// s3Refusal is what a Verifier's error implements when S3 answered with an
// error (s3check.Error).
type s3Refusal interface {
	S3ErrorCode() string
	HTTPStatus() int
}

// classifyCheck reads one check's outcome: accepted; pending (try again:
// InvalidAccessKeyId while the key propagates, or S3 not answering, with
// propagating telling the two apart); or refused.
func classifyCheck(err error) (v checkVerdict, propagating bool, code string, status int) {
	if err == nil {
		return checkAccepted, false, "", 0
	}
	var r s3Refusal
	if !errors.As(err, &r) {
		return checkPending, false, "", 0 // network, timeout, unreadable reply
	}
	code, status = r.S3ErrorCode(), r.HTTPStatus()
	switch {
	case code == "InvalidAccessKeyId":
		return checkPending, true, code, status
	case status >= 500 || status == http.StatusTooManyRequests || code == "SlowDown" || code == "RequestTimeout":
		return checkPending, false, code, status
	}
	return checkRefused, false, code, status
}

// finalVerdict is the verdict of a check still pending at the limit.
func finalVerdict(propagating bool) checkVerdict {
	if propagating {
		return checkRefused // InvalidAccessKeyId past the limit
	}
	return checkUnanswered
}

// Orphan reaping: a mint that timed out may have created a key upstream
// whose reply was lost. It stays live until it expires, held by nobody.
// For a profile that can list its own keys (CacheProfile.Lister), the cache
// then lists them and revokes the ones that mint left.
const (
	// ReapTimeout bounds one reap: the listing and every revocation.
	ReapTimeout = MintTimeout
	// MaxOrphansRevoked: one timed-out mint leaves at most one key, so a
	// reap that finds more than this many candidates revokes none and logs
	// an error: the keys are likely another daemon's that runs with this
	// node name (a duplicate CWCREDS_NODE_NAME), and revoking them would
	// break its clients.
	MaxOrphansRevoked = 2
	// OrphanExpirySlack widens the window of expiry times a timed-out
	// mint's key can have, for clock skew with upstream and its rounding to
	// whole seconds. It stays below half of TimedOutBackoffInitial, the
	// earliest the next mint may start, so the next mint's key is never in
	// the window.
	OrphanExpirySlack = 5 * time.Second
)

// reapAfter reports whether a failed mint may have left an orphan.
func reapAfter(err error) bool { return timedOut(err) }

// orphans picks, among the keys upstream stamped with the profile's
// attributes, those a mint that ran from start to end (and timed out) may
// have created, requesting lifetime: active, not held (the daemon's keys
// are never candidates) and expiring when a key minted in [start, end]
// would, within OrphanExpirySlack. Keys minted before start (served earlier,
// maybe still used by clients) or after end fall outside the window.
func orphans(keys []cwapi.KeyInfo, held func(id string) bool, start, end time.Time, lifetime time.Duration) []cwapi.KeyInfo {
	from := start.Add(lifetime - OrphanExpirySlack)
	to := end.Add(lifetime + OrphanExpirySlack)
	var out []cwapi.KeyInfo
	for _, k := range keys {
		if k.Active() && !held(k.AccessKeyID) && !k.Expires.Before(from) && !k.Expires.After(to) {
			out = append(out, k)
		}
	}
	return out
}
