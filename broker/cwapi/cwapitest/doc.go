// Package cwapitest is an in-process emulator of the CoreWeave AI Object
// Storage credential API (the REST/JSON surface under /v1/cwobject/): the
// test double of package cwapi's Client, as net/http/httptest is for
// net/http. It is used by cwcreds' tests, by `cwcreds demo`, and (through
// test/emulator) by end-to-end and benchmark scripts. It is a test tool: it holds secrets in memory, serves them back
// on /_emulator/keys, and does not verify token signatures.
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
// OIDC tokens (both OIDC flows) must be three base64url segments with a JSON
// header naming an algorithm other than "none", and a JSON payload with
// string iss and sub, aud as a string or array of strings, and a numeric exp
// after Options.Now (nbf, when present, must not be after Now). iss must be
// registered with AddOIDCIssuer, one of the audiences must equal its
// Audience, and the request's orgId must equal its OrgID. The signature is
// NOT verified: any non-empty base64url third segment is accepted. Any
// failure is 400/code 3 "Invalid token".
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
//	POST   /_emulator/oidc-issuers        {"issuer":"https://…","orgId":"cw1","audience":"https://coreweave.com/iam"}
//	POST   /_emulator/saml-configs        {"configId":"c1","orgId":"cw1"}
//	GET    /_emulator/keys                {"keys":[Key...]} (with secrets)
//	GET    /_emulator/keys/{accessKeyId}  Key (with secret)
//
// Durations in control bodies are Go duration strings ("2s") or numbers of
// seconds. Never expose the control surface beyond a test host.
//
// # Concurrency
//
// All methods of *Emulator and its HTTP handler are safe for concurrent use.
// The OnMint and OnRevoke hooks run on request goroutines, without the
// emulator's lock held, so they may call back into the emulator.
package cwapitest
