package broker

import "time"

// Status is a point-in-time view of one profile for status pages and
// readiness checks. It never holds a secret: only the public key id.
type Status struct {
	Profile string `json:"profile"`
	Source  Source `json:"source"`
	// Healthy is true when the profile holds a key that may be served now.
	Healthy   bool   `json:"healthy"`
	Principal string `json:"principal,omitempty"`
	// AccessKeyID and Expiration describe the key served now (or, when
	// none may be served, the newest key held).
	AccessKeyID string     `json:"accessKeyId,omitempty"`
	Expiration  *time.Time `json:"expiration,omitempty"`
	// RefreshAt is when the background refresh will replace the key.
	RefreshAt   *time.Time `json:"refreshAt,omitempty"`
	LastRefresh *time.Time `json:"lastRefresh,omitempty"`
	LastError   string     `json:"lastError,omitempty"`
	LastErrorAt *time.Time `json:"lastErrorAt,omitempty"`
	// NextAttempt is set while the profile is backing off after failures.
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
	// ConsecutiveFailures counts failed mints since the last success.
	ConsecutiveFailures int `json:"consecutiveFailures,omitempty"`
	// LastMintLatencySeconds is how long the last successful mint took
	// upstream.
	LastMintLatencySeconds float64 `json:"lastMintLatencySeconds,omitempty"`
	// WarmingAccessKeyID and WarmingUntil are set while a newly minted key
	// warms up (CacheOptions.KeyWarmup): AccessKeyID, Expiration and
	// Principal describe the previous key, still served, and the new one
	// takes over at WarmingUntil.
	WarmingAccessKeyID string     `json:"warmingAccessKeyId,omitempty"`
	WarmingUntil       *time.Time `json:"warmingUntil,omitempty"`
	// Reason says why the profile is not Healthy; empty when it is. Like
	// LastError it is safe to show: it never holds a secret.
	Reason string `json:"reason,omitempty"`
}
