package server

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
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

// renderedKey holds the response body of one key, rendered at most once:
// the first caller of get renders it and concurrent callers wait for that
// render instead of repeating it. Once rendered it is immutable.
type renderedKey struct {
	creds *cwapi.Credentials
	once  sync.Once
	// Set by once, read only after it.
	body []byte
	err  error
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

// body returns the response body for creds. It renders once per key
// pointer: the first request for a new key (or for a permanent key whose
// body went stale) swaps in a fresh holder, and every concurrent request
// for that key waits on the holder's single render. A body past its
// staleAt is never returned. The hit path is one atomic load and no
// allocation.
func (p *profile) body(creds *cwapi.Credentials, now func() time.Time) ([]byte, error) {
	for {
		k := p.rendered.Load()
		if k == nil || k.creds != creds {
			fresh := &renderedKey{creds: creds}
			if !p.rendered.CompareAndSwap(k, fresh) {
				continue // another request swapped first: use (or replace) its holder
			}
			k = fresh
		}
		k.once.Do(func() { k.render(now(), p.onRender) })
		if k.err != nil {
			return nil, k.err
		}
		if !k.staleAt.IsZero() && !now().Before(k.staleAt) {
			// Swap in a fresh holder unless another request already did,
			// then render (or wait for) that one.
			p.rendered.CompareAndSwap(k, &renderedKey{creds: creds})
			continue
		}
		return k.body, nil
	}
}

// render encodes k.creds as served at now, calling onRender first when set.
// A failure is kept: encoding the same key fails again.
func (k *renderedKey) render(now time.Time, onRender func()) {
	if onRender != nil {
		onRender()
	}
	exp := k.creds.Expires
	if exp.IsZero() {
		exp = now.Add(permanentKeyExpiration)
		k.staleAt = now.Add(permanentKeyRerender)
	}
	k.body, k.err = json.Marshal(credentialsBody{
		AccessKeyID:     k.creds.AccessKeyID,
		SecretAccessKey: k.creds.SecretAccessKey,
		Token:           "",
		Expiration:      formatExpiration(exp),
	})
}

// formatExpiration formats t as UTC truncated to whole seconds.
func formatExpiration(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format(expirationLayout)
}
