package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

const fuzzAdminToken = "admin-9f8e7d6c5b4a39281706f5e4d3c2b1a0"

// fuzzStatuses is every status the handler chain documents.
var fuzzStatuses = map[int]bool{200: true, 400: true, 401: true, 403: true, 404: true, 405: true,
	409: true, 500: true, 502: true, 503: true}

// fuzzKeys answers as the broker would in one of several states, chosen by
// the fuzzer. The errors of modes 2 and 3 and the panic of mode 4 carry the
// secret key, where a careless server could send it to the client (the
// server logs a broker error as it is: KeyGetter's contract makes its text
// safe, so only the panic must stay out of the logs).
func fuzzKeys(mode uint8) *fakeKeys {
	creds := testCreds()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	k := &fakeKeys{status: []broker.Status{{Profile: testProfile, Healthy: mode%6 == 0, AccessKeyID: creds.AccessKeyID, Expiration: &now}}}
	switch mode % 6 {
	case 0:
		k.creds = creds
	case 1:
		k.err = &broker.UnavailableError{Profile: testProfile, Err: &cwapi.APIError{StatusCode: 401, Message: "token revoked"}, RetryAt: now}
	case 2:
		k.err = fmt.Errorf("wrapped %s: %w", creds.SecretAccessKey, context.Canceled)
	case 3:
		k.err = errors.New("internal failure holding " + creds.SecretAccessKey)
	case 4:
		k.get = func(context.Context, string) (*cwapi.Credentials, error) {
			panic("panic holding " + creds.SecretAccessKey)
		}
	case 5:
		k.creds, k.err = nil, nil // neither key nor error
	}
	return k
}

type fuzzRevoker struct{}

func (fuzzRevoker) RevokeOwn(context.Context, string) (*broker.Revocation, error) {
	return nil, broker.ErrNothingToRevoke
}

func (fuzzRevoker) ForgetRevoked(context.Context, string, string) (*broker.Revocation, error) {
	return nil, broker.ErrNothingToRevoke
}

// FuzzHandler sends fuzzed requests (method, target, Host, two headers,
// Authorization) through the whole handler chain: no panic escapes, the
// status is a documented one, JSON bodies are valid, an error body never
// holds the client token, the admin token or the secret key, the logs hold
// none of them, and a key is served only for the right token.
func FuzzHandler(f *testing.F) {
	for _, s := range []struct {
		mode                 uint8
		method, target, host string
		h1, v1, h2, v2, auth string
	}{
		{0, "GET", "/v1/credentials/default", "127.0.0.1:7911", "Accept", "application/json", "User-Agent", "aws-sdk-go-v2", testToken},
		{0, "GET", "/v1/credentials/default", "localhost", "Origin", "https://evil.example", "", "", testToken},
		{0, "GET", "/v1/credentials/default", "evil.example", "", "", "", "", testToken},
		{0, "GET", "/v1/credentials/default", "127.0.0.1", "Sec-Fetch-Site", "none", "Via", "1.1 squid", testToken},
		{0, "GET", "/v1/credentials/default", "[::1]:7911", "", "", "", "", testToken + "x"},
		{1, "GET", "/v1/credentials/default", "127.0.0.1", "", "", "", "", testToken},
		{2, "GET", "/v1/credentials/default", "127.0.0.1", "", "", "", "", testToken},
		{3, "GET", "/v1/credentials/default", "127.0.0.1", "", "", "", "", testToken},
		{4, "GET", "/v1/credentials/default", "127.0.0.1", "", "", "", "", testToken},
		{5, "GET", "/v1/credentials/default", "127.0.0.1", "", "", "", "", testToken},
		{0, "GET", "/v1/credentials/other%2Fx", "127.0.0.1", "", "", "", "", testToken},
		{0, "DELETE", "/v1/credentials/default", "127.0.0.1", "", "", "", "", testToken},
		{0, "GET", "/v1/profiles", "127.0.0.1", "", "", "", "", ""},
		{1, "GET", "/readyz", "127.0.0.1", "", "", "", "", ""},
		{0, "GET", "/healthz?x=1", "127.0.0.1", "", "", "", "", ""},
		{0, "GET", "/metrics", "127.0.0.1", "", "", "", "", ""},
		{0, "POST", "/v1/profiles/default/revoke", "127.0.0.1", "Content-Type", "application/json", "", "", fuzzAdminToken},
		{0, "PUT", "/latest/api/token", "127.0.0.1", "X-aws-ec2-metadata-token-ttl-seconds", "21600", "", "", ""},
		{0, "GET", "/latest/meta-data/iam/security-credentials/default", "127.0.0.1", "X-aws-ec2-metadata-token", "bogus", "", "", ""},
		{0, "OPTIONS", "*", "127.0.0.1", "", "", "", "", ""},
		{0, "GET", "//v1/../v1/credentials/./default", "127.0.0.1", "", "", "", "", testToken},
	} {
		f.Add(s.mode, s.method, s.target, s.host, s.h1, s.v1, s.h2, s.v2, s.auth)
	}
	f.Fuzz(func(t *testing.T, mode uint8, method, target, host, h1, v1, h2, v2, auth string) {
		if !validMethod(method) {
			return // net/http answers 400 before any handler
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // likewise
		}
		r := &http.Request{
			Method: method, URL: u, RequestURI: target, Host: host,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, RemoteAddr: "127.0.0.1:40000", Body: http.NoBody,
		}
		r = r.WithContext(context.Background())
		for _, kv := range [][2]string{{h1, v1}, {h2, v2}} {
			if kv[0] != "" {
				r.Header.Add(kv[0], kv[1])
			}
		}
		if auth != "" {
			r.Header["Authorization"] = []string{auth}
		}
		secret := testCreds().SecretAccessKey
		// Secrets the request itself carries outside Authorization may be
		// echoed (a path naming a profile): check only the others.
		input := method + target + host + h1 + v1 + h2 + v2
		var watch []string
		for _, s := range []string{testToken, fuzzAdminToken, secret} {
			if !strings.Contains(input, s) {
				watch = append(watch, s)
			}
		}

		logs := &syncBuffer{}
		keys := fuzzKeys(mode)
		s := New(zerolog.New(logs).Level(zerolog.TraceLevel), keys, Options{
			ClientTokens: map[string]string{testProfile: testToken, "empty": ""},
			IMDSProfile:  testProfile,
			Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write([]byte("# HELP x\n"))
			}),
			Revoker:    fuzzRevoker{},
			AdminToken: fuzzAdminToken,
		})
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)

		if !fuzzStatuses[rec.Code] {
			t.Fatalf("%s %q: status %d is not a documented one", method, target, rec.Code)
		}
		body := rec.Body.String()
		isJSON := rec.Header().Get("Content-Type") == "application/json"
		if rec.Code != http.StatusOK && !isJSON {
			t.Errorf("%s %q: error %d with Content-Type %q", method, target, rec.Code, rec.Header().Get("Content-Type"))
		}
		if isJSON && !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s %q: body is not JSON: %q", method, target, body)
		}
		if rec.Code != http.StatusOK {
			for _, w := range watch {
				if strings.Contains(body, w) {
					t.Errorf("%s %q: error body holds a secret: %s", method, target, body)
				}
			}
		}
		if strings.Contains(body, secret) && (len(r.Header["Authorization"]) != 1 || auth != testToken) {
			t.Errorf("%s %q: key served without the client token (Authorization %q): %s", method, target, auth, body)
		}
		gotLogs := logs.String()
		for _, w := range watch {
			if w == secret && (mode%6 == 2 || mode%6 == 3) {
				continue
			}
			if strings.Contains(gotLogs, w) {
				t.Errorf("%s %q: logs hold a secret: %s", method, target, gotLogs)
			}
		}
	})
}

// validMethod reports whether m is an HTTP token, as net/http requires.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
