package cwapi

import (
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// Source names the kind of upstream credential a profile mints keys from.
type Source string

// The upstream credential kinds, as spelled in CWCREDS_PROFILE_<NAME>_SOURCE.
const (
	// SourceAccessKey mints a temporary key with POST /v1/cwobject/access-key
	// from a CoreWeave API access token; the lifetime is the profile's.
	SourceAccessKey Source = "access-key"
	// SourceAPIToken exchanges a CoreWeave API access token directly with
	// GET /v1/cwobject/temporary-credentials/api-token; keys live 15 minutes.
	SourceAPIToken Source = "api-token"
	// SourceOIDC federates an OIDC token (Workload Identity Federation) with
	// POST /v1/cwobject/temporary-credentials/oidc.
	SourceOIDC Source = "oidc"
	// SourceSAML federates a base64 SAML response with
	// POST /v1/cwobject/temporary-credentials/saml.
	SourceSAML Source = "saml"
	// SourceWorkloadOIDC takes the identity from the caller: each request's
	// Authorization header is the workload's own OIDC JWT, federated with
	// POST /v1/cwobject/temporary-credentials/oidc. The operator holds no
	// upstream credential for such a profile.
	SourceWorkloadOIDC Source = "workload-oidc"
)

// Credentials is one CoreWeave AI Object Storage access key.
//
// A *Credentials handed out by this package is immutable and shared: callers
// must not modify it. Its String and zerolog forms never include the secret.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	// Principal is the identity the key acts as, e.g. "coreweave/<uid>" or
	// "role/<issuer>:<subject>". Empty when upstream does not say.
	Principal string
	// Expires is when upstream stops accepting the key, in UTC. The zero
	// value means upstream reported a permanent key (see parseExpiry).
	Expires time.Time
}

// String identifies the key without its secret.
func (c *Credentials) String() string {
	if c == nil {
		return "<nil credentials>"
	}
	return fmt.Sprintf("key %s (principal %q, expires %s)", c.AccessKeyID, c.Principal, formatExpiry(c.Expires))
}

// MarshalZerologObject logs the key's public parts only.
func (c *Credentials) MarshalZerologObject(e *zerolog.Event) {
	e.Str("access_key_id", c.AccessKeyID).Str("principal", c.Principal).Str("expires", formatExpiry(c.Expires))
}

func formatExpiry(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}
