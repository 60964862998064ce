package cwapi

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Minter mints one fresh key. Implementations must be safe for concurrent
// use and must honour ctx.
type Minter interface {
	Mint(ctx context.Context) (*Credentials, error)
}

// MinterFunc adapts a function to Minter.
type MinterFunc func(ctx context.Context) (*Credentials, error)

// Mint calls f(ctx).
func (f MinterFunc) Mint(ctx context.Context) (*Credentials, error) { return f(ctx) }

// MintSpec describes how one profile mints its keys upstream.
type MintSpec struct {
	Name   string
	Source Source
	// TokenFile holds the upstream credential; it is re-read at every mint.
	TokenFile string
	// TokenFileRules say which loose modes of TokenFile are accepted
	// (CWCREDS_ALLOW_INSECURE_FILE_MODES, $CREDENTIALS_DIRECTORY). A file
	// they do not accept fails every mint with ErrInsecureFileMode (see
	// ReadTokenFileWith).
	TokenFileRules TokenFileRules
	// OrgID is the CoreWeave organization (oidc, saml).
	OrgID string
	// ConfigID is the SAML federation configuration (saml).
	ConfigID string
	// Duration is the requested key lifetime (ignored by api-token, whose
	// keys always live 15 minutes).
	Duration time.Duration
	// Attributes are stored upstream on every key this profile mints (not
	// sent by api-token, whose exchange has no body). See AuditAttributes.
	Attributes map[string]string
}

// Minter returns the Minter for p, after checking p is complete.
func (c *Client) Minter(p MintSpec) (Minter, error) {
	if p.TokenFile == "" {
		return nil, fmt.Errorf("profile %q: no token file", p.Name)
	}
	needsOrg := p.Source == SourceOIDC || p.Source == SourceSAML
	if needsOrg && p.OrgID == "" {
		return nil, fmt.Errorf("profile %q: source %s needs an org id", p.Name, p.Source)
	}
	if p.Source == SourceSAML && p.ConfigID == "" {
		return nil, fmt.Errorf("profile %q: source saml needs a config id", p.Name)
	}
	if p.Source != SourceAPIToken {
		if _, err := durationSeconds(p.Duration); err != nil {
			return nil, fmt.Errorf("profile %q: %w", p.Name, err)
		}
	}
	var mint func(ctx context.Context, token string) (*Credentials, error)
	switch p.Source {
	case SourceAccessKey:
		mint = func(ctx context.Context, tok string) (*Credentials, error) {
			return c.CreateAccessKey(ctx, tok, p.Duration, p.Attributes)
		}
	case SourceAPIToken:
		mint = c.CreateAccessKeyFromAPIToken
	case SourceOIDC:
		mint = func(ctx context.Context, tok string) (*Credentials, error) {
			return c.CreateAccessKeyFromOIDC(ctx, p.OrgID, tok, p.Duration, p.Attributes)
		}
	case SourceSAML:
		mint = func(ctx context.Context, tok string) (*Credentials, error) {
			return c.CreateAccessKeyFromSAML(ctx, p.OrgID, p.ConfigID, tok, p.Duration, p.Attributes)
		}
	default:
		return nil, fmt.Errorf("profile %q: unknown source %q", p.Name, p.Source)
	}
	return MinterFunc(func(ctx context.Context) (*Credentials, error) {
		tok, err := ReadTokenFileWith(p.TokenFile, p.TokenFileRules)
		if err != nil {
			return nil, err
		}
		return mint(ctx, tok)
	}), nil
}

// Attribute keys cwcreds sets on every key it mints, so an auditor listing
// keys upstream sees which node and profile minted each one.
const (
	AttrNode    = "cwcreds-node"
	AttrProfile = "cwcreds-profile"
	// The Kubernetes identity of a workload key (source workload-oidc),
	// from its token's claims.
	AttrNamespace      = "k8s-namespace"
	AttrServiceAccount = "k8s-service-account"
	AttrPod            = "k8s-pod"
)

// AuditAttributes returns the attributes for keys minted by profile on node,
// within upstream's documented limits: values are at most 63 characters of
// [A-Za-z0-9-_.], starting and ending alphanumeric. Characters outside that
// set become '-'.
func AuditAttributes(node, profile string) map[string]string {
	attrs := map[string]string{AttrProfile: labelValue(profile)}
	if v := labelValue(node); v != "" {
		attrs[AttrNode] = v
	}
	return attrs
}

// WorkloadAttributes returns base (AuditAttributes) plus a workload's
// Kubernetes namespace, service account and pod, each within the same
// limits; empty ones are left out. base is not modified.
func WorkloadAttributes(base map[string]string, namespace, serviceAccount, pod string) map[string]string {
	attrs := make(map[string]string, len(base)+3)
	for k, v := range base {
		attrs[k] = v
	}
	for k, v := range map[string]string{AttrNamespace: namespace, AttrServiceAccount: serviceAccount, AttrPod: pod} {
		if v = labelValue(v); v != "" {
			attrs[k] = v
		}
	}
	return attrs
}

func labelValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			b[i] = '-'
		}
	}
	v := string(b)
	if len(v) > 63 {
		v = v[:63]
	}
	isAlnum := func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
	}
	return strings.TrimFunc(v, func(r rune) bool { return !isAlnum(r) })
}
