package cwapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// List paging (ListAccessKeyInfo takes offset and limit 1..1000 and has no
// next-page token: pages end with a short one).
const (
	ListPageSize = 1000
	// MaxListPages bounds one listing of an organization's keys (10 000).
	MaxListPages = 10
)

// ErrTooManyKeys: the organization holds more keys than one bounded listing
// reads (MaxListPages pages).
var ErrTooManyKeys = errors.New("the organization holds more access keys than one listing reads")

// KeyInfo is one key as ListAccessKeyInfo describes it; never the secret.
type KeyInfo struct {
	AccessKeyID string
	// Status is upstream's, e.g. "ACTIVE", "EXPIRED", "DELETED".
	Status     string
	Principal  string
	Attributes map[string]string
	// Expires is the zero time for a permanent key.
	Expires time.Time
}

// Active reports whether upstream still accepts the key (status ACTIVE, in
// either spelling).
func (k KeyInfo) Active() bool {
	s := strings.ToUpper(k.Status)
	return s == "ACTIVE" || s == "ACCESS_KEY_STATUS_ACTIVE"
}

type keyInfoReply struct {
	AccessKeyID   string            `json:"accessKeyId"`
	Status        string            `json:"status"`
	PrincipalName string            `json:"principalName"`
	Attributes    map[string]string `json:"attributes"`
	Expiry        *string           `json:"expiry"`
}

// ListAccessKeys returns one page of the organization's keys with
// GET /v1/cwobject/access-key?offset&limit.
func (c *Client) ListAccessKeys(ctx context.Context, apiToken string, offset, limit int) ([]KeyInfo, error) {
	if limit < 1 || limit > ListPageSize || offset < 0 {
		return nil, fmt.Errorf("list access keys: offset %d, limit %d out of range", offset, limit)
	}
	u := *c.base
	u.Path += PathAccessKey
	u.RawQuery = "offset=" + strconv.Itoa(offset) + "&limit=" + strconv.Itoa(limit)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PathAccessKey, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Authorization", bearer(apiToken))
	var r struct {
		Info []keyInfoReply `json:"info"`
	}
	start := c.now()
	err = c.send(req, PathAccessKey, &r, apiToken)
	c.obs.UpstreamCall(PathAccessKey, upstreamOutcome(err), c.now().Sub(start))
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(r.Info))
	for _, k := range r.Info {
		if !validKeyPart(k.AccessKeyID, 128) {
			return nil, fmt.Errorf("%w: %s: missing or malformed access key id", ErrBadReply, PathAccessKey)
		}
		exp, err := parseExpiry(k.Expiry)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: key %s: %v", ErrBadReply, PathAccessKey, k.AccessKeyID, err)
		}
		out = append(out, KeyInfo{AccessKeyID: k.AccessKeyID, Status: sanitizeMessage(k.Status, apiToken),
			Principal: sanitizeMessage(k.PrincipalName, apiToken), Attributes: k.Attributes, Expires: exp})
	}
	return out, nil
}

// KeyLister lists the keys upstream that a profile minted.
// Implementations must be safe for concurrent use and must honour ctx.
type KeyLister interface {
	ListOwnKeys(ctx context.Context) ([]KeyInfo, error)
}

// Lister returns the KeyLister for p's keys: the organization's keys that
// carry every one of p.Attributes (see AuditAttributes), read with p's own
// API access token (re-read from p.TokenFile at each call). It returns nil
// when p's keys cannot be told apart upstream: oidc and saml profiles hold
// no API access token (theirs cannot list keys); api-token keys carry no
// attributes (that exchange has no body), so they look like every other
// key of the token's principal, on any node; and without a node attribute
// (no node name) keys of the same profile on other nodes would match.
func (c *Client) Lister(p MintSpec) KeyLister {
	if p.Source != SourceAccessKey || p.Attributes[AttrNode] == "" || p.Attributes[AttrProfile] == "" {
		return nil
	}
	return &profileLister{client: c, profile: p}
}

type profileLister struct {
	client  *Client
	profile MintSpec
}

func (l *profileLister) ListOwnKeys(ctx context.Context) ([]KeyInfo, error) {
	tok, err := ReadTokenFileWith(l.profile.TokenFile, l.profile.TokenFileRules)
	if err != nil {
		return nil, err
	}
	var own []KeyInfo
	for page := range MaxListPages {
		keys, err := l.client.ListAccessKeys(ctx, tok, page*ListPageSize, ListPageSize)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if carries(k.Attributes, l.profile.Attributes) {
				own = append(own, k)
			}
		}
		if len(keys) < ListPageSize {
			return own, nil
		}
	}
	return nil, fmt.Errorf("%w (%d)", ErrTooManyKeys, MaxListPages*ListPageSize)
}

// carries reports whether have holds every attribute of want.
func carries(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}
