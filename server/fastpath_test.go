package server

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// fastPathCase is one request sent to a Server with and without the fast
// credential path.
type fastPathCase struct {
	name string
	// build returns the request; imdsTok is the serving server's IMDS
	// session token.
	build func(imdsTok string) *http.Request
	fast  bool // whether ServeHTTP should bypass chi
}

// fastPathCases are the requests near the fast path's boundary.
func fastPathCases() []fastPathCase {
	get := func(target string, header ...string) func(string) *http.Request {
		return func(string) *http.Request { return request(http.MethodGet, target, header...) }
	}
	with := func(build func(string) *http.Request, edit func(*http.Request)) func(string) *http.Request {
		return func(tok string) *http.Request { r := build(tok); edit(r); return r }
	}
	creds := "/v1/credentials/"
	return []fastPathCase{
		{"hit", get(creds+testProfile, "Authorization", testToken), true},
		{"query", get(creds+testProfile+"?y=z", "Authorization", testToken), true},
		{"no token", get(creds + testProfile), true},
		{"wrong token", get(creds+testProfile, "Authorization", testToken+"x"), true},
		{"two tokens", with(get(creds+testProfile, "Authorization", testToken), func(r *http.Request) {
			r.Header.Add("Authorization", testToken)
		}), true},
		{"unknown profile", get(creds+"nope", "Authorization", testToken), true},
		{"space in name", get(creds+"a%20b", "Authorization", testToken), true},
		{"restricted profile", get(creds+"locked", "Authorization", testToken), true},
		{"broker down", get(creds+"down", "Authorization", testToken), true},
		{"broker panics", get(creds+"boom", "Authorization", testToken), true},
		{"foreign host", with(get(creds+testProfile, "Authorization", testToken), func(r *http.Request) { r.Host = "evil.example" }), true},
		{"origin", get(creds+testProfile, "Authorization", testToken, "Origin", "https://evil.example"), true},
		{"sec-fetch", get(creds+testProfile, "Authorization", testToken, "Sec-Fetch-Site", "none"), true},
		{"x-forwarded-for", get(creds+testProfile, "Authorization", testToken, "X-Forwarded-For", "10.0.0.1"), true},

		{"empty name", get(creds, "Authorization", testToken), false},
		{"collection", get("/v1/credentials", "Authorization", testToken), false},
		{"trailing slash", get(creds+testProfile+"/", "Authorization", testToken), false},
		{"sub-path", get(creds+"a/b", "Authorization", testToken), false},
		{"double leading slash", get("/"+creds+testProfile, "Authorization", testToken), false},
		{"escaped slash", get(creds+"%2F", "Authorization", testToken), false},
		{"escaped name", get(creds+"%64efault", "Authorization", testToken), false},
		{"escaped slash in name", get(creds+"de%2Ffault", "Authorization", testToken), false},
		{"head", func(string) *http.Request {
			return request(http.MethodHead, creds+testProfile, "Authorization", testToken)
		}, false},
		{"post", func(string) *http.Request {
			return request(http.MethodPost, creds+testProfile, "Authorization", testToken)
		}, false},
		{"lower-case get", func(string) *http.Request {
			return request("get", creds+testProfile, "Authorization", testToken)
		}, false},
		{"empty path", with(get("/", "Authorization", testToken), func(r *http.Request) { r.URL.Path = "" }), false},
		{"options star", func(string) *http.Request { return request(http.MethodOptions, "*") }, false},
		{"already routed by chi", with(get(creds+testProfile, "Authorization", testToken), func(r *http.Request) {
			*r = *r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, chi.NewRouteContext()))
		}), false},
		{"profiles", get("/v1/profiles"), false},
		{"healthz", get("/healthz"), false},
		{"metrics", get("/metrics"), false},
		{"revoke", func(string) *http.Request {
			return request(http.MethodPost, "/v1/profiles/"+testProfile+"/revoke", "Authorization", "wrong")
		}, false},
		{"imds list", func(tok string) *http.Request {
			return request(http.MethodGet, imdsCredsPath+"/", hdrIMDSToken, tok)
		}, false},
		{"imds role", func(tok string) *http.Request {
			return request(http.MethodGet, imdsCredsPath+"/"+testProfile, hdrIMDSToken, tok)
		}, false},
		{"imds role without session", get(imdsCredsPath + "/" + testProfile), false},
		{"imds head", func(tok string) *http.Request {
			return request(http.MethodHead, imdsCredsPath+"/"+testProfile, hdrIMDSToken, tok)
		}, false},
	}
}

// fastPathServer builds a server with every route on, counting requests
// and logging at level; its IMDS session token is returned too.
func fastPathServer(t *testing.T, level zerolog.Level, chiOnly bool) (s *Server, logs *syncBuffer, reqs *countingRequests, imdsTok string) {
	t.Helper()
	keys := &fakeKeys{get: func(_ context.Context, profile string) (*cwapi.Credentials, error) {
		switch profile {
		case "down":
			return nil, &broker.UnavailableError{Profile: profile, Err: errors.New("upstream: HTTP 503")}
		case "boom":
			panic("broker panicked")
		}
		return testCreds(), nil
	}, status: []broker.Status{{Profile: testProfile, Healthy: true}}}
	logs, reqs = &syncBuffer{}, &countingRequests{}
	s = New(zerolog.New(logs).Level(level), keys, Options{
		ClientTokens: map[string]string{testProfile: testToken, "locked": testToken, "down": testToken, "boom": testToken},
		Access:       map[string]Access{"locked": {UIDs: []uint32{0}}},
		Peers:        &fakePeers{uid: 1000},
		IMDSProfile:  testProfile,
		Requests:     reqs,
		Metrics:      http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("metrics\n")) }),
		Revoker:      fuzzRevoker{},
		AdminToken:   fuzzAdminToken,
	})
	if chiOnly {
		s.fastCreds = nil
	}
	s.now = func() time.Time { return time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC) } // the audit lines' times
	return s, logs, reqs, imdsToken(t, s, "60")
}

// auditLines returns the audit lines of logs: the other lines hold
// durations and stacks, which differ between any two runs.
func auditLines(logs *syncBuffer) []string {
	var out []string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `"audit":true`) {
			out = append(out, l)
		}
	}
	return out
}

// TestFastPathMatchesChi sends every request near the fast path's boundary
// to a server with the fast path and to one routing everything through chi:
// status, headers, body, audit lines and request counts must be identical,
// and exactly the GET /v1/credentials/<name> requests may skip chi.
func TestFastPathMatchesChi(t *testing.T) {
	for _, level := range []zerolog.Level{zerolog.DebugLevel, zerolog.WarnLevel} {
		t.Run(level.String(), func(t *testing.T) {
			for _, tc := range fastPathCases() {
				t.Run(tc.name, func(t *testing.T) {
					fast, fastLogs, fastReqs, fastTok := fastPathServer(t, level, false)
					viaChi, chiLogs, chiReqs, chiTok := fastPathServer(t, level, true)
					tookFast := false
					inner := fast.fastCreds
					fast.fastCreds = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						tookFast = true
						inner.ServeHTTP(w, r)
					})

					got := serve(fast, tc.build(fastTok))
					want := serve(viaChi, tc.build(chiTok))
					if tookFast != tc.fast {
						t.Errorf("took the fast path: %v, want %v", tookFast, tc.fast)
					}
					if got.Code != want.Code || got.Body.String() != want.Body.String() {
						t.Errorf("fast path: %d %s\nchi:       %d %s", got.Code, got.Body, want.Code, want.Body)
					}
					if !maps.EqualFunc(got.Header(), want.Header(), slices.Equal) {
						t.Errorf("fast path headers %v\nchi headers       %v", got.Header(), want.Header())
					}
					if g, w := auditLines(fastLogs), auditLines(chiLogs); !slices.Equal(g, w) {
						t.Errorf("fast path audit lines %q\nchi audit lines       %q", g, w)
					}
					if !maps.Equal(fastReqs.counts, chiReqs.counts) {
						t.Errorf("fast path counts %v, chi counts %v", fastReqs.counts, chiReqs.counts)
					}
				})
			}
		})
	}
}

func TestCredentialsName(t *testing.T) {
	for _, tc := range []struct {
		path, name string
		ok         bool
	}{
		{"/v1/credentials/default", "default", true},
		{"/v1/credentials/a b", "a b", true},
		{"/v1/credentials/", "", false},
		{"/v1/credentials", "", false},
		{"/v1/credentials/default/", "", false},
		{"/v1/credentials/a/b", "", false},
		{"//v1/credentials/default", "", false},
		{"/v1/credentialsdefault", "", false},
		{"/V1/credentials/default", "", false},
		{"", "", false},
	} {
		if name, ok := credentialsName(tc.path); name != tc.name || ok != tc.ok {
			t.Errorf("credentialsName(%q) = %q, %v; want %q, %v", tc.path, name, ok, tc.name, tc.ok)
		}
	}
}

// TestHandlerHitAllocs: a cache hit through the full handler, audit off,
// allocates nothing, also with Peers wired and another profile restricted
// (an unrestricted profile never consults Peers).
func TestHandlerHitAllocs(t *testing.T) {
	peers := &fakePeers{uid: 1}
	s := New(zerolog.Nop(), &fakeKeys{creds: testCreds()}, Options{
		ClientTokens: map[string]string{testProfile: testToken, "locked": testToken},
		Access:       map[string]Access{"locked": {UIDs: []uint32{1}}},
		Peers:        peers,
	})
	assertHitsAllocNothing(t, s, "cache hit", false, credsRequest(testProfile, testToken))
	if n := peers.uidN.Load() + peers.groupsN.Load(); n != 0 {
		t.Errorf("unrestricted profile made %d peer lookups", n)
	}
}

// assertHitsAllocNothing serves each request r (a cache hit: a 200) through
// s and fails t if one allocates; with first, a first request (a grant or
// a mint) is served before counting.
func assertHitsAllocNothing(t *testing.T, s *Server, what string, first bool, rs ...*http.Request) {
	t.Helper()
	for _, r := range rs {
		w := &discardWriter{h: make(http.Header)}
		if first {
			s.ServeHTTP(w, r)
		}
		if n := testing.AllocsPerRun(200, func() {
			w.reset()
			s.ServeHTTP(w, r)
		}); n != 0 {
			t.Errorf("%s allocates %v times per request, want 0", what, n)
		}
		if w.status != http.StatusOK {
			t.Errorf("%s: status = %d, want 200", what, w.status)
		}
	}
}
