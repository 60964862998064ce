package cwapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fuzzSecret is the upstream credential every fuzzed request carries; the
// seeds also put it in reply bodies, where upstream might echo it.
// fuzzNumericSecret stands for a secret key sent as a JSON number.
const (
	fuzzSecret        = "cwtok-FUZZ-MARKER-7f3a9c1e5b2d4f60a8"
	fuzzNumericSecret = "982451653982451653"
)

// replyDoer answers every request in memory with one canned reply.
type replyDoer struct {
	status     int
	retryAfter string
	body       []byte
}

func (d replyDoer) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if d.retryAfter != "" {
		h.Set("Retry-After", d.retryAfter)
	}
	return &http.Response{StatusCode: d.status, Header: h, Body: io.NopCloser(bytes.NewReader(d.body)), Request: req}, nil
}

// FuzzClientReply feeds arbitrary bytes to the client as the reply of every
// call, with any status: no panic, a success is a well-formed key, and an
// error never holds the request's credential (whole or any minEchoLen-byte
// piece of it), a secret from the body, or a line break.
func FuzzClientReply(f *testing.F) {
	for _, s := range []struct {
		call   uint8
		status int
		retry  string
		body   string
	}{
		{0, 200, "", `{"accessKeyId":"CWABCDEFGHIJKLMN","secretKey":"` + fuzzSecret + `","principalName":"coreweave/u1","expiry":"2030-01-01T09:15:01Z"}`},
		{0, 200, "", `{"accessKeyId":"CWABCDEFGHIJKLMN","secretKey":` + fuzzNumericSecret + `}`},
		{0, 200, "", `{"accessKeyId":"CWABC","secretKey":"` + fuzzSecret + `","expiry":"` + fuzzSecret + `"}`},
		{1, 200, "", `{"AccessKeyId":"CWABC","SecretAccessKey":"` + fuzzSecret + `","Expiration":"2030-01-01T00:00:00Z"}`},
		{2, 200, "", `{"accessKeyID":"CWABC","secretKey":"x y","expiry":"1970-01-01T00:00:00Z"}`},
		{3, 200, "", `{"accessKeyId":"CWABC","secretKey":"` + fuzzSecret},
		{0, 401, "", `{"code":16,"message":"token ` + fuzzSecret + ` is revoked"}`},
		{1, 403, "", `{"code":"permission_denied","message":"` + fuzzSecret[:20] + `"}`},
		{2, 429, "7", `{"code":8,"message":"slow down"}`},
		{3, 503, "Wed, 21 Oct 2015 07:28:00 GMT", `upstream connect error ` + fuzzSecret},
		{4, 500, "", `{"code":13,"message":"a\nb\u0000` + fuzzSecret[5:] + `"}`},
		{4, 200, "", ``},
		{0, 302, "", `<html>moved</html>`},
	} {
		f.Add(s.call, s.status, s.retry, []byte(s.body))
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, call uint8, status int, retryAfter string, body []byte) {
		if status < 100 || status > 999 {
			status = 100 + (status%900+900)%900
		}
		c, err := NewClient("https://api.example.test", func(o *ClientOptions) {
			o.HTTPClient = replyDoer{status: status, retryAfter: retryAfter, body: body}
			o.Now = func() time.Time { return now }
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var creds *Credentials
		switch call % 5 {
		case 0:
			creds, err = c.CreateAccessKey(ctx, fuzzSecret, time.Hour, nil)
		case 1:
			creds, err = c.CreateAccessKeyFromAPIToken(ctx, fuzzSecret)
		case 2:
			creds, err = c.CreateAccessKeyFromOIDC(ctx, "cw123", fuzzSecret, time.Hour, nil)
		case 3:
			creds, err = c.CreateAccessKeyFromSAML(ctx, "cw123", "cfg", fuzzSecret, time.Hour, nil)
		case 4:
			err = c.RevokeAccessKey(ctx, fuzzSecret, "CWABC")
		}
		if err == nil {
			if status < 200 || status > 299 {
				t.Fatalf("status %d accepted", status)
			}
			if call%5 != 4 && (creds == nil || !validKeyPart(creds.AccessKeyID, 128) || !validKeyPart(creds.SecretAccessKey, 1024)) {
				t.Fatalf("success with a malformed key: %+v", creds)
			}
			return
		}
		var apiErr *APIError
		if status >= 200 && status <= 299 && !errors.Is(err, ErrBadReply) {
			t.Errorf("2xx reply error %v is not ErrBadReply", err)
		} else if (status < 200 || status > 299) && !errors.As(err, &apiErr) {
			t.Errorf("HTTP %d error %v is not an *APIError", status, err)
		}
		msg := err.Error()
		if strings.ContainsAny(msg, "\r\n") {
			t.Errorf("error text holds a line break: %q", msg)
		}
		if strings.Contains(msg, fuzzNumericSecret) {
			t.Errorf("error text holds the numeric secret: %q", msg)
		}
		for i := 0; i+minEchoLen <= len(fuzzSecret); i++ {
			if strings.Contains(msg, fuzzSecret[i:i+minEchoLen]) {
				t.Fatalf("error text holds %q, part of the request's credential: %q", fuzzSecret[i:i+minEchoLen], msg)
			}
		}
	})
}

func TestSanitizeMessageRedactsEchoes(t *testing.T) {
	const secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0cmFpbmVyIn0.c2lnbmF0dXJlLXNlY3JldC1wYXJ0"
	tests := []struct{ msg, want string }{
		{"token " + secret + " revoked", "token [REDACTED] revoked"},
		{"bad signature c2lnbmF0dXJlLXNlY3JldC1wYXJ0", "bad signature [REDACTED]"},
		{"token " + secret[:30] + "... invalid", "token [REDACTED]... invalid"},
		{"tok\x00" + secret, "tok [REDACTED]"},
		{"short eyJhbGciOiJ ok", "short eyJhbGciOiJ ok"}, // 11 bytes: below minEchoLen
		{"nothing secret here", "nothing secret here"},
	}
	for _, tt := range tests {
		if got := sanitizeMessage(tt.msg, secret); got != tt.want {
			t.Errorf("sanitizeMessage(%q) = %q, want %q", tt.msg, got, tt.want)
		}
	}
	long := strings.Repeat("x", maxErrorMessageLen-20) + secret
	if got := sanitizeMessage(long, secret); strings.Contains(got, secret[:minEchoLen]) || !strings.HasSuffix(got, "[REDACTED]…") {
		t.Errorf("secret cut by the length limit: %q", got[maxErrorMessageLen-20:])
	}
}
