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

// renderedKey holds the response body of one key, rendered at most once:
// the first caller of get renders it and concurrent callers wait for that
// render instead of repeating it. Once rendered it is immutable.
type renderedKey struct {
	creds *cwapi.Credentials
	once  sync.Once
	// Set by once, read only after it.
	body []byte
	err  error
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
// pointer: the first request for a new key swaps in a fresh holder, and
// every concurrent request for that key waits on the holder's single
// render. The hit path is one atomic load and no allocation.
func (p *profile) body(creds *cwapi.Credentials) ([]byte, error) {
	for {
		k := p.rendered.Load()
		if k == nil || k.creds != creds {
			fresh := &renderedKey{creds: creds}
			if !p.rendered.CompareAndSwap(k, fresh) {
				continue // another request swapped first: use (or replace) its holder
			}
			k = fresh
		}
		k.once.Do(func() { k.render(p.onRender) })
		return k.body, k.err
	}
}

// render encodes k.creds, calling onRender first when set. A failure is
// kept: encoding the same key fails again. The broker never hands out a
// zero Expires (KeyGetter), so a key is rendered once.
func (k *renderedKey) render(onRender func()) {
	if onRender != nil {
		onRender()
	}
	k.body, k.err = json.Marshal(credentialsBody{
		AccessKeyID:     k.creds.AccessKeyID,
		SecretAccessKey: k.creds.SecretAccessKey,
		Token:           "",
		Expiration:      formatExpiration(k.creds.Expires),
	})
}

// formatExpiration formats t as UTC truncated to whole seconds.
func formatExpiration(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format(expirationLayout)
}
