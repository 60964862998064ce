package cwapi

import (
	"context"
	"errors"
	"fmt"
)

// Errors Revoke returns besides upstream's.
var (
	// ErrRevokeTokenRequired: the profile's own credential cannot revoke
	// keys (oidc and saml hold no API access token), and none was given.
	ErrRevokeTokenRequired = errors.New("revoking this profile's keys needs a CoreWeave API access token")
)

// Revoker revokes one access key upstream. apiToken is the CoreWeave API
// access token to revoke with; "" means the profile's own credential.
// Implementations must be safe for concurrent use and must honour ctx.
type Revoker interface {
	Revoke(ctx context.Context, apiToken, accessKeyID string) error
}

// Revoker returns the Revoker for p's keys. Without an explicit token,
// access-key and api-token profiles revoke with their own upstream token,
// read from p.TokenFile at each call (with the same file mode rule as
// minting); oidc and saml profiles hold no API access
// token, so they need one (ErrRevokeTokenRequired).
func (c *Client) Revoker(p MintSpec) Revoker {
	return &profileRevoker{client: c, profile: p}
}

type profileRevoker struct {
	client  *Client
	profile MintSpec
}

func (r *profileRevoker) Revoke(ctx context.Context, apiToken, accessKeyID string) error {
	if apiToken == "" {
		if src := r.profile.Source; src != SourceAccessKey && src != SourceAPIToken {
			return fmt.Errorf("%w: source %s holds none", ErrRevokeTokenRequired, src)
		}
		tok, err := ReadTokenFileWith(r.profile.TokenFile, r.profile.TokenFileRules)
		if err != nil {
			return err
		}
		apiToken = tok
	}
	return r.client.RevokeAccessKey(ctx, apiToken, accessKeyID)
}
