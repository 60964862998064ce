package server

import (
	"encoding/json"
	"time"

	"github.com/cwcreds/cwcreds/broker"
)

// expirationLayout is the Expiration format every SDK parses: UTC, whole
// seconds, literal Z.
const expirationLayout = "2006-01-02T15:04:05Z"

// Permanent keys (zero Expires) are still served with an Expiration: without
// one the Go SDKs never refresh and botocore and the JavaScript SDK fail. The
// advertised hour makes clients come back for whatever key the broker holds
// then; the body is re-rendered after half of it, so clients always see at
// least 30 minutes (above every SDK's refresh window).
const (
	permanentKeyExpiration = time.Hour
	permanentKeyRerender   = permanentKeyExpiration / 2
)

// renderedKey is the response body for one key. It is immutable.
type renderedKey struct {
	creds *broker.Credentials
	body  []byte
	// staleAt, when non-zero, is when body's Expiration becomes too close
	// and it must be rendered again (permanent keys only).
	staleAt time.Time
}

// credentialsBody is the container-credentials response. Field order is the
// wire order.
type credentialsBody struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

// body returns the response body for creds, rendering it only when creds is
// not the key rendered last time. Concurrent callers may both render a new
// key; either result is correct.
func (p *profile) body(creds *broker.Credentials, now func() time.Time) ([]byte, error) {
	if r := p.rendered.Load(); r != nil && r.creds == creds && (r.staleAt.IsZero() || now().Before(r.staleAt)) {
		return r.body, nil
	}
	r, err := render(creds, now())
	if err != nil {
		return nil, err
	}
	p.rendered.Store(r)
	return r.body, nil
}

// render encodes creds as served at now.
func render(creds *broker.Credentials, now time.Time) (*renderedKey, error) {
	r := &renderedKey{creds: creds}
	exp := creds.Expires
	if exp.IsZero() {
		exp = now.Add(permanentKeyExpiration)
		r.staleAt = now.Add(permanentKeyRerender)
	}
	body, err := json.Marshal(credentialsBody{
		AccessKeyID:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		Token:           "",
		Expiration:      formatExpiration(exp),
	})
	if err != nil {
		return nil, err
	}
	r.body = body
	return r, nil
}

// formatExpiration formats t as UTC truncated to whole seconds.
func formatExpiration(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format(expirationLayout)
}
