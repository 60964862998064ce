package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// countingRequests is a RequestMetrics recording counts per profile label.
type countingRequests struct {
	mu     sync.Mutex
	counts map[string]int // "profile/outcome" -> count
	asked  []string       // profiles Requests was called with
}

func (c *countingRequests) Requests(profile string) RequestCounter {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, profile)
	return counterFunc(func(o Outcome) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.counts == nil {
			c.counts = map[string]int{}
		}
		c.counts[profile+"/"+o.String()]++
	})
}

type counterFunc func(Outcome)

func (f counterFunc) Count(o Outcome) { f(o) }

func TestRequestCountsAndAuditLines(t *testing.T) {
	unavailable := &broker.UnavailableError{Profile: testProfile, Err: errors.New("upstream: HTTP 503")}
	tests := []struct {
		name       string
		req        *http.Request
		getErr     error
		wantCount  string
		wantLevel  string
		wantFields map[string]any
	}{
		{"served", credsRequest(testProfile, testToken), nil, "default/ok", "info",
			map[string]any{"event": "credential_grant", "profile": testProfile, "outcome": "ok", "key_id_suffix": "0001", "peer": "address 127.0.0.1"}},
		{"wrong token", credsRequest(testProfile, "nope"), nil, "default/unauthorized", "warn",
			map[string]any{"event": "credential_refusal", "profile": testProfile, "outcome": "unauthorized", "reason": "wrong or missing client token"}},
		{"unknown profile", credsRequest("attacker-input", testToken), nil, "/unknown_profile", "info",
			map[string]any{"event": "credential_refusal", "outcome": "unknown_profile", "reason": "unknown profile"}},
		{"no valid key", credsRequest(testProfile, testToken), unavailable, "default/no_valid_key", "info",
			map[string]any{"event": "credential_refusal", "profile": testProfile, "outcome": "no_valid_key"}},
		{"internal error", credsRequest(testProfile, testToken), errors.New("boom"), "default/error", "warn",
			map[string]any{"event": "credential_refusal", "profile": testProfile, "outcome": "error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs := &countingRequests{}
			var keys KeyGetter = &fakeKeys{creds: testCreds(), err: tt.getErr}
			if tt.getErr != nil {
				keys = &fakeKeys{err: tt.getErr}
			}
			s, logs := newTestServer(t, keys, func(o *Options) {
				o.Requests = reqs
				o.PeerIdentity = func(*http.Request) (int, int, bool) { return 1000, 4242, true }
			})
			serve(s, tt.req)
			if len(reqs.counts) != 1 || reqs.counts[tt.wantCount] != 1 {
				t.Errorf("counts = %v, want exactly %s once", reqs.counts, tt.wantCount)
			}
			var audits []map[string]any
			for l := range strings.Lines(logs.String()) {
				var line map[string]any
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				if line["audit"] == true {
					audits = append(audits, line)
				}
			}
			if len(audits) != 1 {
				t.Fatalf("audit lines = %v, want exactly one", audits)
			}
			a := audits[0]
			if a["level"] != tt.wantLevel || a["count"] != 1.0 || a["at"] == nil || a["peer_uid"] != 1000.0 || a["peer_pid"] != 4242.0 {
				t.Errorf("audit line = %v, want level %s, count 1, the time, peer uid and pid", a, tt.wantLevel)
			}
			for k, want := range tt.wantFields {
				if a[k] != want {
					t.Errorf("audit %s = %#v, want %#v", k, a[k], want)
				}
			}
			if _, ok := a["profile"]; !ok && tt.wantFields["profile"] != nil {
				t.Errorf("audit line lacks the profile")
			}
			for _, secret := range []string{testToken, "cwoSECRET", "CWAKIDEXAMPLE0001", "attacker-input"} {
				if strings.Contains(fmt.Sprint(a), secret) {
					t.Errorf("audit line holds %q: %v", secret, a)
				}
			}
		})
	}
	t.Run("resolved once per profile", func(t *testing.T) {
		reqs := &countingRequests{}
		s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) { o.Requests = reqs })
		for range 3 {
			serve(s, credsRequest(testProfile, testToken))
		}
		if len(reqs.asked) != 2 || reqs.counts["default/ok"] != 3 {
			t.Errorf("Requests called for %q, counts %v; want one call per profile plus \"\", and 3 ok", reqs.asked, reqs.counts)
		}
	})
}

func TestReadyz(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		status []broker.Status
		code   int
		want   string
	}{
		{"all ready", []broker.Status{{Profile: "a", Healthy: true, Expiration: &exp}, {Profile: "b", Healthy: true}},
			200, `{"ready":true,"profiles":2}`},
		{"one not ready", []broker.Status{
			{Profile: "a", Healthy: true},
			{Profile: "b", Reason: `profile "b" has no valid key: /v1/cwobject/access-key: HTTP 401 (UNAUTHENTICATED): bad token`},
			{Profile: "c", Reason: "no key minted yet"},
		}, 503, `{"ready":false,"profiles":3,"notReady":[` +
			`{"profile":"b","reason":"profile \"b\" has no valid key: /v1/cwobject/access-key: HTTP 401 (UNAUTHENTICATED): bad token"},` +
			`{"profile":"c","reason":"no key minted yet"}]}`},
		{"no reason given", []broker.Status{{Profile: "a"}}, 503, `{"ready":false,"profiles":1,"notReady":[{"profile":"a","reason":"no servable key"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := &fakeKeys{status: tt.status, get: func(context.Context, string) (*cwapi.Credentials, error) {
				panic("readyz must not call Get")
			}}
			s, _ := newTestServer(t, keys)
			rec := serve(s, request(http.MethodGet, "/readyz"))
			if rec.Code != tt.code || rec.Body.String() != tt.want {
				t.Errorf("GET /readyz = %d %s\nwant %d %s", rec.Code, rec.Body, tt.code, tt.want)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
		})
	}
}

func TestMetricsRoute(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "cwcreds_up 1\n") })
	s, _ := newTestServer(t, &fakeKeys{}, func(o *Options) { o.Metrics = metrics })
	if rec := serve(s, request(http.MethodGet, "/metrics")); rec.Code != 200 || rec.Body.String() != "cwcreds_up 1\n" {
		t.Errorf("GET /metrics = %d %s", rec.Code, rec.Body)
	}
	// The same guards as every route.
	r := request(http.MethodGet, "/metrics")
	r.Host = "evil.example:7911"
	checkJSONError(t, serve(s, r), 403, "Forbidden")
	r = request(http.MethodGet, "/metrics", "X-Forwarded-For", "10.0.0.1")
	checkJSONError(t, serve(s, r), 403, "Forbidden")
	checkJSONError(t, serve(s, request(http.MethodPost, "/metrics")), 405, "MethodNotAllowed")

	s, _ = newTestServer(t, &fakeKeys{})
	checkJSONError(t, serve(s, request(http.MethodGet, "/metrics")), 404, "NotFound")
}

// fakeRevoker answers with rev or err and records the call; token is the
// key id ForgetRevoked was given ("" for RevokeOwn).
type fakeRevoker struct {
	rev            *broker.Revocation
	err            error
	profile, token string
	calls          int
}

func (f *fakeRevoker) RevokeOwn(_ context.Context, profile string) (*broker.Revocation, error) {
	f.calls++
	f.profile = profile
	return f.rev, f.err
}

func (f *fakeRevoker) ForgetRevoked(_ context.Context, profile, keyID string) (*broker.Revocation, error) {
	f.calls++
	f.profile, f.token = profile, keyID
	return f.rev, f.err
}

const adminToken = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

func adminRevokeRequest(profile, token, body string) *http.Request {
	r := request(http.MethodPost, "/v1/profiles/"+profile+"/revoke")
	if token != "" {
		r.Header.Set("Authorization", token)
	}
	if body != "" {
		r.Body = io.NopCloser(strings.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	return r
}

func TestRevokeEndpoint(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	done := &broker.Revocation{Profile: testProfile, RevokedAccessKeyID: "CWOLD0001", NewAccessKeyID: "CWNEW0002", NewExpiration: &exp}
	const apiTok = "CW-SECRET-api-token-in-body"
	tests := []struct {
		name      string
		req       *http.Request
		rev       *broker.Revocation
		err       error
		code      int
		errCode   string
		wantToken string
		called    bool
	}{
		{"no token", adminRevokeRequest(testProfile, "", ""), done, nil, 401, "Unauthorized", "", false},
		{"client token is not admin", adminRevokeRequest(testProfile, testToken, ""), done, nil, 401, "Unauthorized", "", false},
		{"own credential", adminRevokeRequest(testProfile, adminToken, ""), done, nil, 200, "", "", true},
		// No upstream credential is ever taken over the socket (issue 11,
		// finding 1): a body carrying one is refused and never used.
		{"upstream token refused", adminRevokeRequest(testProfile, adminToken, `{"apiToken":"`+apiTok+`"}`), done, nil, 400, "UpstreamTokenRefused", "", false},
		{"upstream token refused with a key id", adminRevokeRequest(testProfile, adminToken, `{"revokedAccessKeyId":"CWOLD0001","APIToken":"`+apiTok+`"}`), done, nil, 400, "UpstreamTokenRefused", "", false},
		{"key revoked by the caller", adminRevokeRequest(testProfile, adminToken, `{"revokedAccessKeyId":"CWOLD0001"}`), done, nil, 200, "", "CWOLD0001", true},
		{"bad key id", adminRevokeRequest(testProfile, adminToken, `{"revokedAccessKeyId":"CW\nX"}`), done, nil, 400, "BadRequest", "", false},
		{"bad body", adminRevokeRequest(testProfile, adminToken, `{"revokedAccessKeyId":"CWOLD0001","x":1}`), done, nil, 400, "BadRequest", "", false},
		{"trailing garbage", adminRevokeRequest(testProfile, adminToken, `{"revokedAccessKeyId":"a"} {}`), done, nil, 400, "BadRequest", "", false},
		{"unknown profile", adminRevokeRequest("nope", adminToken, ""), nil, fmt.Errorf("%w: %q", broker.ErrUnknownProfile, "nope"), 404, "UnknownProfile", "", true},
		{"nothing cached", adminRevokeRequest(testProfile, adminToken, ""), nil, broker.ErrNothingToRevoke, 409, "NoKey", "", true},
		{"oidc without token", adminRevokeRequest(testProfile, adminToken, ""), nil, cwapi.ErrRevokeTokenRequired, 400, "RevokeTokenRequired", "", true},
		{"upstream refused", adminRevokeRequest(testProfile, adminToken, ""), nil,
			fmt.Errorf("revoke: %w", &cwapi.APIError{Endpoint: cwapi.PathRevokeByKey, StatusCode: 403, Code: 7, Message: "denied"}), 502, "UpstreamError", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := &fakeRevoker{rev: tt.rev, err: tt.err}
			s, logs := newTestServer(t, &fakeKeys{}, func(o *Options) { o.Revoker, o.AdminToken = fr, adminToken })
			rec := serve(s, tt.req)
			if tt.errCode != "" {
				checkJSONError(t, rec, tt.code, tt.errCode)
			} else {
				var got broker.Revocation
				if rec.Code != tt.code || json.Unmarshal(rec.Body.Bytes(), &got) != nil || got.NewAccessKeyID != "CWNEW0002" {
					t.Errorf("POST revoke = %d %s, want %d and the revocation", rec.Code, rec.Body, tt.code)
				}
			}
			if (fr.calls == 1) != tt.called || fr.token != tt.wantToken {
				t.Errorf("revoker called %d times with token %q; want called=%v with %q", fr.calls, fr.token, tt.called, tt.wantToken)
			}
			for _, secret := range []string{apiTok, adminToken, testToken} {
				if strings.Contains(logs.String(), secret) || strings.Contains(rec.Body.String(), secret) {
					t.Errorf("a token leaked into the logs or the answer: %s %s", logs, rec.Body)
				}
			}
		})
	}
	t.Run("disabled without an admin token", func(t *testing.T) {
		fr := &fakeRevoker{rev: done}
		s, _ := newTestServer(t, &fakeKeys{}, func(o *Options) { o.Revoker = fr })
		checkJSONError(t, serve(s, adminRevokeRequest(testProfile, "", "")), 401, "Unauthorized")
		r := adminRevokeRequest(testProfile, "", "")
		r.Header["Authorization"] = []string{""}
		checkJSONError(t, serve(s, r), 401, "Unauthorized")
		if fr.calls != 0 {
			t.Errorf("revoker called without an admin token configured")
		}
	})
	t.Run("body too large", func(t *testing.T) {
		fr := &fakeRevoker{rev: done}
		s, _ := newTestServer(t, &fakeKeys{}, func(o *Options) { o.Revoker, o.AdminToken = fr, adminToken })
		big := `{"revokedAccessKeyId":"` + string(bytes.Repeat([]byte("A"), maxRevokeBody)) + `"}`
		checkJSONError(t, serve(s, adminRevokeRequest(testProfile, adminToken, big)), 400, "BadRequest")
	})
	t.Run("GET is not allowed", func(t *testing.T) {
		s, _ := newTestServer(t, &fakeKeys{})
		rec := serve(s, request(http.MethodGet, "/v1/profiles/"+testProfile+"/revoke"))
		checkJSONError(t, rec, 405, "MethodNotAllowed")
		if got := rec.Header().Get("Allow"); got != "POST" {
			t.Errorf("Allow = %q, want POST", got)
		}
	})
}
