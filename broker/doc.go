// Package broker caches CoreWeave AI Object Storage access keys per
// profile, minting them through a cwapi.Minter and revoking them through a
// cwapi.Revoker (package cwapi is the CoreWeave API client).
//
// A Cache holds one entry per configured profile; Cache.Update replaces the
// profile set while it runs (a configuration reload), keeping the entries
// whose settings did not change. Its hit path is two atomic loads: it takes
// no lock that a mint or an update holds. Concurrent misses for one profile
// share one upstream call (singleflight), and a caller whose context ends
// leaves without cancelling that shared call. Cache.Run refreshes every key in
// the background once two thirds of its lifetime has passed, so a warm profile
// never makes a client wait on upstream; a failed refresh keeps serving the
// still-valid key and retries with backoff. A refreshed key is held back
// for a short warm-up (CacheOptions.KeyWarmup) while the previous, still
// valid key is served, because the object store may refuse a brand-new key
// for a few seconds. The whole caching policy (which key to serve, when to
// mint, warm-up, permanent keys, backoff) lives in policy.go.
//
// Nothing in this package logs or returns a secret in an error: keys
// (cwapi.Credentials) redact themselves, and Status and UnavailableError
// describe failures with fixed phrases, never upstream text.
package broker
