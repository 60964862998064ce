// Package cwapitest is an in-process emulator of the CoreWeave AI Object
// Storage credential API (the REST/JSON surface under /v1/cwobject/): the
// test double of package cwapi's Client, as net/http/httptest is for
// net/http. It is used by cwcreds' tests, by `cwcreds demo`, and (through
// test/emulator) by end-to-end and benchmark scripts. It is a test tool: it
// holds secrets in memory and serves them back on /_emulator/keys. It is
// also an OIDC issuer (Issuer), whose signed tokens it verifies as CoreWeave
// verifies workload identity tokens.
//
// # Served API
//
// An *Emulator is an http.Handler. It serves, as specified in
// docs/coreweave-api.md:
//
//	POST /v1/cwobject/access-key                          TokenAuth, camelCase key
//	GET  /v1/cwobject/temporary-credentials/api-token     TokenAuth, 15-minute key, PascalCase
//	POST /v1/cwobject/temporary-credentials/oidc          anonymous, camelCase key
//	GET  /v1/cwobject/temporary-credentials/oidc/{orgId}  raw JWT in Authorization, 15-minute key, PascalCase
//	POST /v1/cwobject/temporary-credentials/saml          anonymous, camelCase key
//	GET  /v1/cwobject/access-key                          TokenAuth, {"info":[AccessKeyInfo...]}
//	GET  /v1/cwobject/access-key/{accessKeyId}            TokenAuth, {"info":AccessKeyInfo}
//	POST /v1/cwobject/revoke-access-key/access-key        TokenAuth, {"accessKey":id} -> {}
//	POST /v1/cwobject/revoke-access-key/principal         TokenAuth, {"principalName":p} -> {}
//	PUT  /v1/cwobject/access-key-status                   TokenAuth, {"principalName":p,"status":s} -> {}
//
// and, once StartIssuer has started its own OIDC issuer (or for any issuer
// given to ServeIssuer, at that issuer's path):
//
//	GET  /oidc/.well-known/openid-configuration           OIDC discovery document
//	GET  /oidc/openid/v1/jwks                             JWKS: public keys with kid, alg, use "sig"
//
// TokenAuth is "Authorization: Bearer <API token>" with a token registered by
// AddAPIToken. A camelCase key reply is
//
//	{"accessKeyId":"CW…","secretKey":"cwo…","principalName":"…","expiry":"2026-01-02T03:04:05Z","attributes":{}}
//
// and a PascalCase (AWS container-credentials shaped) reply is
//
//	{"AccessKeyId":"CW…","SecretAccessKey":"cwo…","Token":"","Expiration":"…","attributes":{},"multiAttributes":{}}
//
// Timestamps are RFC 3339 in UTC with whole seconds; a permanent key's expiry
// is "1970-01-01T00:00:00Z". Key ids are "CW" and 14 upper-case
// alphanumerics; secrets are "cwo" and 40 lower-case alphanumerics.
//
// Every error is google.rpc.Status JSON, {"code":3,"message":"…","details":[]},
// with the numeric gRPC code and the usual HTTP mapping (3→400, 5→404,
// 7→403, 8→429, 13→500, 14→503, 16→401). An unknown path is 404/code 5, a
// wrong method 405/code 12. Messages never contain a presented token.
//
// # Token validation
//
// OIDC tokens (both OIDC flows) must be compact JWS signed with RS256 or
// ES256 (never "none", never HMAC) whose iss is registered with
// AddOIDCIssuer for the request's orgId, and whose signature verifies with
// a key that issuer publishes: the key of the header's kid (or, without a
// kid, any of its keys of that alg), with a matching alg and use "sig" when
// the key states them. The issuer's keys come from the OIDCIssuer: an
// in-process Issuer (read directly), a fixed key set, a JWKS URL, or OIDC
// discovery at <iss>/.well-known/openid-configuration; fetched sets are
// cached and fetched again for an unknown kid. The verified payload must
// have string iss and sub, aud as a string or array of strings of which
// one equals the issuer's Audience, and a numeric exp after Options.Now
// (nbf, when present, must not be after Now). The principal is
// "role/<iss>:<sub>". Any failure is 400/code 3 "Invalid token".
//
// # OIDC issuer
//
// An *Issuer is an OIDC issuer test double shaped like a Kubernetes API
// server's service-account issuer: an RS256 and an ES256 key, a discovery
// document at <iss>/.well-known/openid-configuration and a JWKS at
// <iss>/openid/v1/jwks, tokens with the claims of a projected service
// account token (Issuer.Token and TokenSpec), forged tokens for negative
// tests (Issuer.Forge), key rotation (Rotate, Retire) and counters of
// document fetches (Issuer.Stats). NewIssuerServer serves one standalone;
// Emulator.StartIssuer creates the emulator's own, served at
// <emulator>/oidc, trusted, and driven by the oidc controls below.
//
// A SAML response must be standard base64 of well-formed XML whose root is a
// Response or Assertion element carrying an Attribute named
// "https://coreweave.com/SAML/Attributes/Role"; its first AttributeValue is
// the role. XML signatures are NOT verified either.
//
// # Test controls
//
// Latency (SetLatency), reply latency (SetReplyLatency) and faults
// (InjectFault) apply to the five minting endpoints only. A minting request
// is counted, waits out the latency, then takes the first queued fault that
// matches its endpoint, if any; a faulted request counts as a request but
// not as a mint. A request that mints a key then waits out the reply
// latency before replying: if the client gives up meanwhile, the key stays
// minted and is counted in Stats.Orphaned, as a real upstream leaves a key
// behind when a client times out on a slow reply. A request that gives up
// during the latency mints nothing. The same controls, plus identity
// registration and key lookup, are served as JSON under /_emulator/ for
// out-of-process drivers:
//
//	GET    /_emulator/stats               Stats
//	POST   /_emulator/reset-stats         {}
//	GET    /_emulator/latency             {"latency":"200ms"}
//	PUT    /_emulator/latency             {"latency":"200ms"} -> the same
//	GET    /_emulator/reply-latency       {"latency":"60s"}
//	PUT    /_emulator/reply-latency       {"latency":"60s"} -> the same
//	GET    /_emulator/faults              {"faults":[Fault...]}
//	POST   /_emulator/faults              Fault, e.g. {"endpoint":"","status":503,"code":14,"count":3,"retryAfter":"2s","delay":"10s"}
//	DELETE /_emulator/faults              {}
//	POST   /_emulator/api-tokens          {"token":"CW-SECRET-…","principal":"coreweave/u1","orgId":"cw1","denied":false}
//	POST   /_emulator/oidc-issuers        {"issuer":"https://…","orgId":"cw1","audience":"https://coreweave.com/iam","jwksUrl":"…","keys":{JWKS}}
//	GET    /_emulator/oidc-issuer         {"issuer":…,"discoveryUrl":…,"jwksUri":…,"keys":[{"kid","alg","current"}…],"stats":{"discovery":n,"jwks":n}}
//	POST   /_emulator/oidc-tokens         {"subject","audience","namespace","serviceAccount","pod","podUid","node","ttlSeconds","alg","claims","forge"} -> {"token":"…"}
//	POST   /_emulator/oidc-rotate         (no body) -> {"current":[kid…],"previous":[kid…]}
//	POST   /_emulator/oidc-retire         {"kid":"…"} -> {}
//	POST   /_emulator/saml-configs        {"configId":"c1","orgId":"cw1"}
//	GET    /_emulator/keys                {"keys":[Key...]} (with secrets)
//	GET    /_emulator/keys/{accessKeyId}  Key (with secret)
//
// Durations in control bodies are Go duration strings ("2s") or numbers of
// seconds. The oidc-issuers control trusts the emulator's own issuer
// directly when it names it without keys; the other oidc controls drive the
// emulator's own issuer (StartIssuer) and answer 404/code 5 without one. In
// oidc-tokens every field is optional (TokenSpec's defaults: a one-hour
// RS256 token for system:serviceaccount:default:default, audience
// https://coreweave.com/iam); audience is a string or an array, a negative
// ttlSeconds makes an expired token, claims override or (null) remove
// claims, and forge is one of alg-none, hmac-public-key, foreign-key,
// unknown-kid and tampered. reset-stats also zeroes the served issuers'
// fetch counters. Never expose the control surface beyond a test host.
//
// # Concurrency
//
// All methods of *Emulator and its HTTP handler are safe for concurrent use.
// The OnMint and OnRevoke hooks run on request goroutines, without the
// emulator's lock held, so they may call back into the emulator.
package cwapitest
