package cwapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The CoreWeave credential API paths this client calls.
const (
	PathAccessKey      = "/v1/cwobject/access-key"
	PathAPITokenCreds  = "/v1/cwobject/temporary-credentials/api-token"
	PathOIDCCreds      = "/v1/cwobject/temporary-credentials/oidc"
	PathSAMLCreds      = "/v1/cwobject/temporary-credentials/saml"
	PathRevokeByKey    = "/v1/cwobject/revoke-access-key/access-key"
	maxReplyBytes      = 1 << 20
	maxErrorMessageLen = 512
	// MaxKeyDuration is the longest lifetime upstream grants (12 h).
	MaxKeyDuration = 12 * time.Hour
)

// HTTPDoer sends HTTP requests; *http.Client satisfies it.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// ClientOptions tunes a Client.
type ClientOptions struct {
	// HTTPClient sends the requests. Default: NewHTTPClient().
	HTTPClient HTTPDoer
	// UserAgent is sent on every request. Default "cwcreds".
	UserAgent string
	// Now reads the clock, for Retry-After dates and call latency.
	// Default time.Now.
	Now func() time.Time
	// Observer receives every upstream call, for metrics. Default: none.
	Observer UpstreamObserver
}

// Client calls the CoreWeave credential API. It is safe for concurrent use.
// It never retries: mints are not idempotent (a lost reply leaves an orphaned
// key), so retry policy belongs to the caller.
type Client struct {
	base      *url.URL
	http      HTTPDoer
	userAgent string
	now       func() time.Time
	obs       UpstreamObserver
}

// NewClient returns a client for the API at baseURL, e.g.
// "https://api.coreweave.com".
func NewClient(baseURL string, opts ...func(*ClientOptions)) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api url %q: want an absolute http(s) URL", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	o := ClientOptions{UserAgent: "cwcreds", Now: time.Now}
	for _, fn := range opts {
		fn(&o)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = NewHTTPClient()
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	return &Client{base: u, http: o.HTTPClient, userAgent: o.UserAgent, now: o.Now, obs: o.Observer}, nil
}

// NewHTTPClient returns the http.Client the broker uses upstream: bounded
// dial, TLS and response-header times, an overall timeout, TLS 1.2 or later,
// environment proxies honoured, and no redirects (a redirect could carry a
// bearer token elsewhere).
func NewHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// mintReply is the camelCase reply of the access-key, OIDC and SAML mints.
// Older documentation spells the id "accessKeyID"; both are accepted.
type mintReply struct {
	AccessKeyID      string  `json:"accessKeyId"`
	AccessKeyIDUpper string  `json:"accessKeyID"`
	SecretKey        string  `json:"secretKey"`
	PrincipalName    string  `json:"principalName"`
	Expiry           *string `json:"expiry"`
}

// containerReply is the PascalCase, AWS-container-shaped reply of the
// api-token exchange.
type containerReply struct {
	AccessKeyID     string  `json:"AccessKeyId"`
	SecretAccessKey string  `json:"SecretAccessKey"`
	Expiration      *string `json:"Expiration"`
}

// CreateAccessKey mints a temporary key from an API access token with
// POST /v1/cwobject/access-key. The lifetime d must be 1s..12h: this client
// never asks for a permanent key.
func (c *Client) CreateAccessKey(ctx context.Context, apiToken string, d time.Duration, attrs map[string]string) (*Credentials, error) {
	secs, err := durationSeconds(d)
	if err != nil {
		return nil, err
	}
	body := struct {
		DurationSeconds int64             `json:"durationSeconds"`
		Attributes      map[string]string `json:"attributes,omitempty"`
	}{secs, attrs}
	var r mintReply
	if err := c.do(ctx, http.MethodPost, PathAccessKey, bearer(apiToken), body, &r, apiToken); err != nil {
		return nil, err
	}
	return r.credentials(PathAccessKey)
}

// CreateAccessKeyFromAPIToken exchanges an API access token for a 15-minute
// key with GET /v1/cwobject/temporary-credentials/api-token.
func (c *Client) CreateAccessKeyFromAPIToken(ctx context.Context, apiToken string) (*Credentials, error) {
	var r containerReply
	if err := c.do(ctx, http.MethodGet, PathAPITokenCreds, bearer(apiToken), nil, &r, apiToken); err != nil {
		return nil, err
	}
	return newCredentials(PathAPITokenCreds, r.AccessKeyID, r.SecretAccessKey, "", r.Expiration)
}

// CreateAccessKeyFromOIDC federates an OIDC token with the anonymous
// POST /v1/cwobject/temporary-credentials/oidc.
func (c *Client) CreateAccessKeyFromOIDC(ctx context.Context, orgID, oidcToken string, d time.Duration, attrs map[string]string) (*Credentials, error) {
	secs, err := durationSeconds(d)
	if err != nil {
		return nil, err
	}
	body := struct {
		OrgID           string            `json:"orgId"`
		OIDCToken       string            `json:"oidcToken"`
		DurationSeconds int64             `json:"durationSeconds"`
		Attributes      map[string]string `json:"attributes,omitempty"`
	}{orgID, oidcToken, secs, attrs}
	var r mintReply
	if err := c.do(ctx, http.MethodPost, PathOIDCCreds, "", body, &r, oidcToken); err != nil {
		return nil, err
	}
	return r.credentials(PathOIDCCreds)
}

// CreateAccessKeyFromSAML federates a base64 SAML response with the anonymous
// POST /v1/cwobject/temporary-credentials/saml.
func (c *Client) CreateAccessKeyFromSAML(ctx context.Context, orgID, configID, samlResponse string, d time.Duration, attrs map[string]string) (*Credentials, error) {
	secs, err := durationSeconds(d)
	if err != nil {
		return nil, err
	}
	body := struct {
		OrgID           string            `json:"orgId"`
		ConfigID        string            `json:"configId"`
		SAMLResponse    string            `json:"samlResponse"`
		DurationSeconds int64             `json:"durationSeconds"`
		Attributes      map[string]string `json:"attributes,omitempty"`
	}{orgID, configID, samlResponse, secs, attrs}
	var r mintReply
	if err := c.do(ctx, http.MethodPost, PathSAMLCreds, "", body, &r, samlResponse); err != nil {
		return nil, err
	}
	return r.credentials(PathSAMLCreds)
}

// RevokeAccessKey revokes one key by its id with
// POST /v1/cwobject/revoke-access-key/access-key.
func (c *Client) RevokeAccessKey(ctx context.Context, apiToken, accessKeyID string) error {
	body := struct {
		AccessKey string `json:"accessKey"`
	}{accessKeyID}
	return c.do(ctx, http.MethodPost, PathRevokeByKey, bearer(apiToken), body, nil, apiToken)
}

func bearer(token string) string { return "Bearer " + token }

func durationSeconds(d time.Duration) (int64, error) {
	if d < time.Second || d > MaxKeyDuration {
		return 0, fmt.Errorf("key lifetime %s out of range: want 1s to %s", d, MaxKeyDuration)
	}
	return int64(d / time.Second), nil
}

// do sends one request and decodes a 2xx JSON reply into out (if non-nil).
// secret is the credential the request carries: it is scrubbed from any
// message upstream echoes back.
func (c *Client) do(ctx context.Context, method, path, authz string, in, out any, secret string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s: encode request: %w", path, err)
		}
		body = bytes.NewReader(b)
	}
	u := *c.base
	u.Path += path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	start := c.now()
	err = c.send(req, path, out, secret)
	c.obs.UpstreamCall(path, upstreamOutcome(err), c.now().Sub(start))
	return err
}

// send sends req and decodes a 2xx JSON reply into out (if non-nil).
func (c *Client) send(req *http.Request, path string, out any, secret string) error {
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error repeats the URL, which holds no secret; the token is
		// only ever in a header or the body.
		return fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes+1))
	if err != nil {
		return fmt.Errorf("%s: read reply: %w", path, err)
	}
	if len(data) > maxReplyBytes {
		return fmt.Errorf("%w: %s: reply larger than %d bytes", ErrBadReply, path, maxReplyBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return parseAPIError(path, resp, data, secret, c.now())
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadReply, path, describeJSONError(err))
	}
	return nil
}

// describeJSONError keeps a decode error's position and kind but never the
// value that failed, which could be part of a secret.
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		// Value is "number 123" for a number: keep only the kind.
		kind, _, _ := strings.Cut(typ.Value, " ")
		return fmt.Sprintf("field %q: want %s, got JSON %s", typ.Field, typ.Type, kind)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	default:
		return "invalid JSON"
	}
}

// parseAPIError turns a non-2xx reply into an *APIError. The body is
// google.rpc.Status JSON ({code, message, details}); a Connect-style string
// code or a non-JSON body still yields an error with the HTTP status.
func parseAPIError(path string, resp *http.Response, data []byte, secret string, now time.Time) error {
	e := &APIError{Endpoint: path, StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	var body struct {
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(data, &body) == nil {
		if n, err := strconv.Atoi(string(body.Code)); err == nil {
			e.Code = n
		}
		e.Message = body.Message
	}
	e.Message = sanitizeMessage(e.Message, secret)
	return e
}

// minEchoLen is the shortest run of a request's secret that sanitizeMessage
// redacts when upstream echoes only part of it (a truncated token, one
// segment of a JWT). Shorter runs are too short to matter and too likely to
// be ordinary text.
const minEchoLen = 12

// sanitizeMessage removes control characters, excess length and the
// request's secret, whole or any part of it minEchoLen bytes or longer, from
// an upstream message before it can reach a log or a client. Control
// characters go first, so that they can neither hide the secret from
// redaction nor, turned into spaces, form it; the message is cut before
// redaction, so the work is bounded and a secret cut short is still caught.
func sanitizeMessage(msg, secret string) string {
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
	cut := len(msg) > maxErrorMessageLen
	if cut {
		msg = strings.ToValidUTF8(msg[:maxErrorMessageLen], "")
	}
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "[REDACTED]")
		msg = redactEchoes(msg, secret)
	}
	if cut {
		msg += "…"
	}
	return strings.TrimSpace(msg)
}

// redactEchoes replaces every run of msg that is made of overlapping
// minEchoLen-byte pieces of secret with [REDACTED].
func redactEchoes(msg, secret string) string {
	if len(secret) < minEchoLen || len(msg) < minEchoLen {
		return msg
	}
	pieces := make(map[string]struct{}, len(secret)-minEchoLen+1)
	for i := 0; i+minEchoLen <= len(secret); i++ {
		pieces[secret[i:i+minEchoLen]] = struct{}{}
	}
	var b strings.Builder
	done := 0 // msg[:done] is in b, or redacted
	for i := 0; i+minEchoLen <= len(msg); {
		if _, ok := pieces[msg[i:i+minEchoLen]]; !ok {
			i++
			continue
		}
		end := i + minEchoLen
		for end < len(msg) {
			if _, ok := pieces[msg[end+1-minEchoLen:end+1]]; !ok {
				break
			}
			end++
		}
		b.WriteString(msg[done:i])
		b.WriteString("[REDACTED]")
		done, i = end, end
	}
	if done == 0 {
		return msg
	}
	b.WriteString(msg[done:])
	return b.String()
}

// parseRetryAfter accepts delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func (r *mintReply) credentials(path string) (*Credentials, error) {
	id := r.AccessKeyID
	if id == "" {
		id = r.AccessKeyIDUpper
	}
	return newCredentials(path, id, r.SecretKey, r.PrincipalName, r.Expiry)
}

func newCredentials(path, id, secret, principal string, expiry *string) (*Credentials, error) {
	if !validKeyPart(id, 128) {
		return nil, fmt.Errorf("%w: %s: missing or malformed access key id", ErrBadReply, path)
	}
	if !validKeyPart(secret, 1024) {
		return nil, fmt.Errorf("%w: %s: missing or malformed secret key", ErrBadReply, path)
	}
	exp, err := parseExpiry(expiry)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadReply, path, err)
	}
	return &Credentials{AccessKeyID: id, SecretAccessKey: secret, Principal: sanitizeMessage(principal, ""), Expires: exp}, nil
}

// validKeyPart accepts 1..max printable ASCII characters without spaces or
// quotes, so a key can go into a header, a log line or JSON unescaped.
func validKeyPart(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

var (
	unixEpoch = time.Unix(0, 0).UTC()
	yearOne   = time.Time{}
)

// parseExpiry reads an RFC 3339 timestamp (fractional seconds and offsets
// allowed). The permanent-key forms (absent, empty, 1970-01-01T00:00:00Z and
// 0001-01-01T00:00:00Z) all yield the zero time.
func parseExpiry(s *string) (time.Time, error) {
	if s == nil || *s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return time.Time{}, errors.New("expiry is not an RFC 3339 timestamp")
	}
	t = t.UTC()
	if t.Equal(unixEpoch) || t.Equal(yearOne) {
		return time.Time{}, nil
	}
	return t, nil
}
