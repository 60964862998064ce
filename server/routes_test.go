package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

func TestGetCredentials(t *testing.T) {
	keys := &fakeKeys{creds: testCreds()}
	s, logs := newTestServer(t, keys)
	rec := serve(s, credsRequest(testProfile, testToken))

	want := `{"AccessKeyId":"CWAKIDEXAMPLE0001","SecretAccessKey":"cwoSECRETEXAMPLEVALUE","Token":"","Expiration":"2030-01-02T03:04:05Z"}`
	if rec.Code != http.StatusOK || rec.Body.String() != want {
		t.Errorf("GET = %d %s\nwant 200 %s", rec.Code, rec.Body, want)
	}
	for k, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"} {
		if got := rec.Header().Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly [%q]", k, got, want)
		}
	}
	if strings.Contains(logs.String(), "cwoSECRET") {
		t.Errorf("logs hold the secret: %s", logs)
	}
}

// TestGetCredentialsAuditLine: a key served to a new peer logs exactly one
// line at info, its grant line, with the key id's suffix only and no secret
// or token; serving it again to the same peer logs nothing more until the
// next audit flush.
func TestGetCredentialsAuditLine(t *testing.T) {
	keys := &fakeKeys{creds: testCreds()}
	var logs syncBuffer
	s := New(zerolog.New(&logs).Level(zerolog.InfoLevel), keys, Options{ClientTokens: map[string]string{testProfile: testToken}})
	s.now = func() time.Time { return time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC) }
	for range 3 {
		if rec := serve(s, credsRequest(testProfile, testToken)); rec.Code != http.StatusOK {
			t.Fatalf("status = %d, want 200", rec.Code)
		}
	}
	want := `{"level":"info","audit":true,"event":"credential_grant","profile":"default","outcome":"ok",` +
		`"peer":"address 127.0.0.1","key_id_suffix":"0001","at":"2026-12-06T04:00:00Z","count":1,` +
		`"message":"key granted to a peer for the first time"}` + "\n"
	if got := logs.String(); got != want {
		t.Errorf("logs at info:\n%s\nwant exactly the audit line:\n%s", got, want)
	}
	for _, secret := range []string{testToken, "cwoSECRET", "CWAKIDEXAMPLE0001"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs contain %q: %s", secret, logs.String())
		}
	}
}

func TestExpiration(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 999_000_000, time.UTC)
	tests := []struct {
		name    string
		expires time.Time
		want    string
	}{
		{"utc whole seconds", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), "2030-01-02T03:04:05Z"},
		{"fraction truncated, not rounded", time.Date(2030, 1, 2, 3, 4, 5, 999_999_999, time.UTC), "2030-01-02T03:04:05Z"},
		{"offset converted to UTC", time.Date(2030, 1, 2, 8, 34, 5, 500, time.FixedZone("IST", 5*3600+1800)), "2030-01-02T03:04:05Z"},
		{"negative offset crosses midnight", time.Date(2029, 12, 31, 19, 4, 5, 0, time.FixedZone("EST", -5*3600)), "2030-01-01T00:04:05Z"},
		{"monotonic reading ignored", time.Now().Add(time.Hour), time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds := testCreds()
			creds.Expires = tt.expires
			s, _ := newTestServer(t, &fakeKeys{creds: creds})
			s.now = func() time.Time { return now }
			rec := serve(s, credsRequest(testProfile, testToken))
			var got credentialsBody
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %s: %v", rec.Body, err)
			}
			if got.Expiration != tt.want {
				t.Errorf("Expiration = %q, want %q", got.Expiration, tt.want)
			}
		})
	}
}

func TestBodyCache(t *testing.T) {
	keys := &fakeKeys{creds: testCreds()}
	s, _ := newTestServer(t, keys)
	get := func() string {
		t.Helper()
		rec := serve(s, credsRequest(testProfile, testToken))
		if rec.Code != http.StatusOK {
			t.Fatalf("status = %d, want 200", rec.Code)
		}
		return rec.Body.String()
	}

	first := get()
	rendered := s.profile(testProfile).rendered.Load()
	if got := get(); got != first {
		t.Errorf("second body = %s, want %s", got, first)
	}
	if got := s.profile(testProfile).rendered.Load(); got != rendered {
		t.Errorf("same key rendered again")
	}

	next := testCreds()
	next.AccessKeyID = "CWAKIDEXAMPLE0002"
	next.Expires = next.Expires.Add(time.Hour)
	keys.set(next, nil)
	want := `{"AccessKeyId":"CWAKIDEXAMPLE0002","SecretAccessKey":"cwoSECRETEXAMPLEVALUE","Token":"","Expiration":"2030-01-02T04:04:05Z"}`
	if got := get(); got != want {
		t.Errorf("after the broker changed key, body = %s, want %s", got, want)
	}
	if got := s.profile(testProfile).rendered.Load().creds; got != next {
		t.Errorf("cached body is for %v, want %v", got, next)
	}

	// A different pointer is re-rendered even with equal content.
	same := *next
	keys.set(&same, nil)
	get()
	if got := s.profile(testProfile).rendered.Load().creds; got != &same {
		t.Errorf("cached body is for %p, want the new pointer %p", got, &same)
	}
}

func TestCredentialsErrors(t *testing.T) {
	unavailable := &broker.UnavailableError{
		Profile: testProfile,
		Err:     errors.New("upstream: HTTP 503"),
		RetryAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	tests := []struct {
		name    string
		req     *http.Request
		getErr  error
		status  int
		code    string
		message string // exact when set
	}{
		{"unknown profile", credsRequest("nope", testToken), nil, 404, "UnknownProfile", `unknown profile: "nope"`},
		{"unknown profile before auth", credsRequest("nope", ""), nil, 404, "UnknownProfile", ""},
		{"empty profile", credsRequest("", testToken), nil, 404, "NotFound", ""},
		{"escaped profile", credsRequest("%64efault", testToken), nil, 404, "UnknownProfile", ""},
		{"collection", request(http.MethodGet, "/v1/credentials"), nil, 404, "NotFound", ""},
		{"missing token", credsRequest(testProfile, ""), nil, 401, "Unauthorized", ""},
		{"wrong token", credsRequest(testProfile, strings.Repeat("x", len(testToken))), nil, 401, "Unauthorized", ""},
		{"token prefix", credsRequest(testProfile, testToken[:10]), nil, 401, "Unauthorized", ""},
		{"token with suffix", credsRequest(testProfile, testToken+"0"), nil, 401, "Unauthorized", ""},
		{"two authorization headers", func() *http.Request {
			r := credsRequest(testProfile, testToken)
			r.Header.Add("Authorization", testToken)
			return r
		}(), nil, 401, "Unauthorized", ""},
		{"bearer prefix", credsRequest(testProfile, "Bearer "+testToken), nil, 401, "Unauthorized", ""},
		{"no valid key", credsRequest(testProfile, testToken), unavailable, 503, "NoValidKey", unavailable.Error()},
		{"wrapped no valid key", credsRequest(testProfile, testToken), fmt.Errorf("x: %w", broker.ErrNoValidKey), 503, "NoValidKey", "no valid key"},
		{"canceled", credsRequest(testProfile, testToken), fmt.Errorf("waiting: %w", context.Canceled), 503, "NoValidKey", ""},
		{"deadline", credsRequest(testProfile, testToken), context.DeadlineExceeded, 503, "NoValidKey", ""},
		{"broker unknown profile", credsRequest(testProfile, testToken), fmt.Errorf("%w: %q", broker.ErrUnknownProfile, testProfile), 404, "UnknownProfile", ""},
		{"other error", credsRequest(testProfile, testToken), errors.New("db password=hunter2 rejected"), 500, "InternalError", "internal error"},
		{"unknown path", request(http.MethodGet, "/v1/credential/default"), nil, 404, "NotFound", ""},
		{"profile sub-path", request(http.MethodGet, "/v1/credentials/default/x"), nil, 404, "NotFound", ""},
		{"root", request(http.MethodGet, "/"), nil, 404, "NotFound", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := &fakeKeys{err: tt.getErr}
			s, _ := newTestServer(t, keys)
			rec := serve(s, tt.req)
			msg := checkJSONError(t, rec, tt.status, tt.code)
			if tt.message != "" && msg != tt.message {
				t.Errorf("message = %q, want %q", msg, tt.message)
			}
			if strings.Contains(rec.Body.String(), "hunter2") {
				t.Errorf("internal detail leaked to the client: %s", rec.Body)
			}
		})
	}
}

func TestCredentialsNilKeyIsInternalError(t *testing.T) {
	s, _ := newTestServer(t, &fakeKeys{})
	checkJSONError(t, serve(s, credsRequest(testProfile, testToken)), 500, "InternalError")
}

func TestEmptyConfiguredTokenMatchesNothing(t *testing.T) {
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
		o.ClientTokens = map[string]string{testProfile: ""}
	})
	checkJSONError(t, serve(s, credsRequest(testProfile, "")), 401, "Unauthorized")
	r := credsRequest(testProfile, "")
	r.Header["Authorization"] = []string{""}
	checkJSONError(t, serve(s, r), 401, "Unauthorized")
}

func TestUnauthorizedLog(t *testing.T) {
	const presented = "presented-token-must-not-be-logged"
	s, logs := newTestServer(t, &fakeKeys{creds: testCreds()})
	checkJSONError(t, serve(s, credsRequest(testProfile, presented)), 401, "Unauthorized")

	var line map[string]any
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `"level":"warn"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line["profile"] != testProfile || line["peer"] != "address 127.0.0.1" || line["outcome"] != "unauthorized" || line["audit"] != true {
		t.Errorf("401 warn line = %v, want the audit refusal line with profile %q, peer address and outcome", line, testProfile)
	}
	for _, secret := range []string{presented, testToken} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs contain a token: %s", logs)
		}
	}
}

func TestContextCanceledWhileWaiting(t *testing.T) {
	keys := &fakeKeys{get: func(ctx context.Context, _ string) (*cwapi.Credentials, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("waiting for a key: %w", ctx.Err())
	}}
	s, _ := newTestServer(t, keys)

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		checkJSONError(t, serve(s, credsRequest(testProfile, testToken).WithContext(ctx)), 503, "NoValidKey")
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		defer cancel()
		checkJSONError(t, serve(s, credsRequest(testProfile, testToken).WithContext(ctx)), 503, "NoValidKey")
	})
}

func TestMethodNotAllowed(t *testing.T) {
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()})
	for _, path := range []string{"/v1/credentials/" + testProfile, "/v1/profiles", "/healthz"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead, http.MethodOptions, "BREW"} {
			t.Run(method+" "+path, func(t *testing.T) {
				rec := serve(s, request(method, path, "Authorization", testToken))
				checkJSONError(t, rec, 405, "MethodNotAllowed")
				if got := rec.Header().Values("Allow"); len(got) != 1 || got[0] != "GET" {
					t.Errorf("Allow = %q, want [GET]", got)
				}
			})
		}
	}
}

func TestHealthz(t *testing.T) {
	keys := &fakeKeys{get: func(context.Context, string) (*cwapi.Credentials, error) {
		panic("healthz must not call the broker")
	}}
	s, _ := newTestServer(t, keys)
	rec := serve(s, request(http.MethodGet, "/healthz"))
	if rec.Code != 200 || rec.Body.String() != `{"status":"ok"}` {
		t.Errorf("GET /healthz = %d %s, want 200 {\"status\":\"ok\"}", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
}

func TestProfiles(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		status []broker.Status
		want   string
	}{
		{"none", nil, `{"profiles":[]}`},
		{"one", []broker.Status{{Profile: "a", Source: cwapi.SourceOIDC, Healthy: true, AccessKeyID: "AK", Expiration: &exp}},
			`{"profiles":[{"profile":"a","source":"oidc","healthy":true,"accessKeyId":"AK","expiration":"2030-01-02T03:04:05Z"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestServer(t, &fakeKeys{status: tt.status})
			rec := serve(s, request(http.MethodGet, "/v1/profiles"))
			if rec.Code != 200 || rec.Body.String() != tt.want {
				t.Errorf("GET /v1/profiles = %d %s, want 200 %s", rec.Code, rec.Body, tt.want)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
		})
	}
}
