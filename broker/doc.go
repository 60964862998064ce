// Package broker mints CoreWeave AI Object Storage access keys from upstream
// credentials and caches them per profile.
//
// A Cache holds one entry per configured profile. Its hit path is an atomic
// load: it takes no lock that a mint holds. Concurrent misses for one profile
// share one upstream call (singleflight), and a caller whose context ends
// leaves without cancelling that shared call. Cache.Run refreshes every key in
// the background once two thirds of its lifetime has passed, so a warm profile
// never makes a client wait on upstream; a failed refresh keeps serving the
// still-valid key and retries with backoff. All timing policy lives in
// policy.go.
//
// Client talks to the CoreWeave credential API (api.coreweave.com): the four
// minting endpoints and key revocation. It never retries a mint by itself,
// since mints are not idempotent; retry policy belongs to the Cache.
//
// Nothing in this package logs or returns a secret in an error: Credentials
// redact themselves, and API error messages have request tokens scrubbed.
package broker
