// Package server serves the broker's keys on loopback HTTP endpoints that AWS
// SDKs accept as a container-credentials provider
// (AWS_CONTAINER_CREDENTIALS_FULL_URI plus AWS_CONTAINER_AUTHORIZATION_TOKEN
// or AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE).
//
// # Routes
//
//	GET /v1/credentials/{profile}  the profile's current key (client token required)
//	GET /v1/profiles               every profile's broker.Status (no secret; for debugging)
//	GET /healthz                   liveness: {"status":"ok"}, never calls the broker
//	GET /readyz                    readiness: 200 when every profile holds a servable key, else 503 naming those that do not and why
//	GET /metrics                   Prometheus metrics (when Options.Metrics is set)
//	POST /v1/profiles/{profile}/revoke  revoke the profile's key upstream and mint a new one (admin token required)
//
// Only those methods are served; any other gets 405 with an Allow header.
//
// Server.MetricsHandler is a second handler, for a metrics-only listener
// (CWCREDS_METRICS_LISTEN_ADDR): GET /metrics, /healthz and /readyz
// only, everything else 404, without the guards below (it serves nothing
// secret).
//
// # Audit log
//
// The audit trail (audit.go) records grants, not requests: a line with
// "audit":true and "event":"credential_grant" the first time a key is
// served to a peer (the connection's uid as LimitConnections found it,
// else its address), then at most one "credential_grant_summary" per
// AuditInterval per (key, peer) with the count served since. Refusals are
// summarised the same way per (profile, peer, reason)
// ("credential_refusal", "credential_refusal_summary"). The counts of a
// pair's lines add up to its requests once Server.RunAudit has flushed
// them. At most maxAuditPairs pairs are tracked; requests of others are
// counted in "audit_overflow" lines. A tracked pair's request costs an
// atomic load, a map lookup and an atomic add: no lock, no allocation, no
// line.
//
// # Wire format
//
// A key is served as HTTP 200 with Content-Type application/json,
// Cache-Control no-store and exactly this body:
//
//	{"AccessKeyId":"…","SecretAccessKey":"…","Token":"","Expiration":"2006-01-02T15:04:05Z"}
//
// All four members are always present because botocore, the AWS CLI and the
// JavaScript SDK fail without any of them. Token is the empty string: the
// key needs no session token, and "" is the only value every client
// accepts. Expiration is the key's expiry in UTC, truncated to whole seconds,
// with a literal Z (the JavaScript SDK rejects numeric offsets).
//
// Every error is JSON with Content-Type exactly application/json (the Go SDK
// parses error bodies only then) and carries both spellings SDKs read:
//
//	{"code":"NoValidKey","message":"…","Code":"NoValidKey","Message":"…"}
//
// Statuses: 401 Unauthorized (missing or wrong client token), 403 Forbidden
// (refused Host or a proxy header), 404 UnknownProfile or NotFound, 405
// MethodNotAllowed, 503 NoValidKey (the broker has no key to serve now, or
// the request gave up waiting for one; every SDK retries it) and 500
// InternalError (details only in the daemon's log).
//
// # Security
//
// The Authorization header must equal the profile's client token, compared
// in constant time; the presented value is never logged or echoed. A profile
// that does not exist gets 404 before the token is checked. Every route
// refuses a Host that is not a loopback IP literal or "localhost" (DNS
// rebinding defence; Options.AllowNonLoopbackHosts widens this to any IP
// literal), any request carrying X-Forwarded-For, Forwarded or Via, since the
// endpoint must never be reached through a proxy, and any request carrying
// Origin or a Sec-Fetch-* header, since only browsers send those and a web
// page must not be able to use the daemon as a credential oracle. A
// panicking handler gets a JSON 500; only the panic's type and stack are
// logged, never its value.
//
// # Concurrency
//
// A Server is safe for concurrent use. The hot path (a warm profile) skips
// the router (ServeHTTP serves GET /v1/credentials/<name> itself, through
// the same middleware), reads one map entry of the current profile set (one
// atomic load), makes one KeyGetter call and writes a body rendered once
// per key, however many requests wait for it; it takes no lock, does not
// encode JSON and allocates nothing (the audit trail only counts).
// Server.SetProfiles replaces the profile set while requests run (SIGHUP
// reload): unchanged profiles keep their rendered body and counters.
package server
