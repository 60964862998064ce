package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker"
)

func newIMDSServer(t *testing.T, keys KeyGetter) *Server {
	t.Helper()
	s, _ := newTestServer(t, keys, func(o *Options) { o.IMDSProfile = testProfile })
	return s
}

// imdsToken gets a session token from s, failing the test otherwise.
func imdsToken(t *testing.T, s *Server, ttl string) string {
	t.Helper()
	rec := serve(s, request(http.MethodPut, imdsTokenPath, "X-aws-ec2-metadata-token-ttl-seconds", ttl))
	if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
		t.Fatalf("PUT token: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestIMDSTokenPut(t *testing.T) {
	s := newIMDSServer(t, &fakeKeys{creds: testCreds()})
	tests := []struct {
		name   string
		header []string
		status int
	}{
		{"ttl 1", []string{"X-aws-ec2-metadata-token-ttl-seconds", "1"}, 200},
		{"ttl 21600", []string{"X-aws-ec2-metadata-token-ttl-seconds", "21600"}, 200},
		{"ttl 0", []string{"X-aws-ec2-metadata-token-ttl-seconds", "0"}, 400},
		{"ttl 21601", []string{"X-aws-ec2-metadata-token-ttl-seconds", "21601"}, 400},
		{"ttl negative", []string{"X-aws-ec2-metadata-token-ttl-seconds", "-5"}, 400},
		{"ttl not a number", []string{"X-aws-ec2-metadata-token-ttl-seconds", "60s"}, 400},
		{"ttl huge", []string{"X-aws-ec2-metadata-token-ttl-seconds", "99999999999999999999"}, 400},
		{"ttl missing", nil, 400},
		{"x-forwarded-for", []string{"X-aws-ec2-metadata-token-ttl-seconds", "60", "X-Forwarded-For", "10.0.0.1"}, 403},
		{"forwarded", []string{"X-aws-ec2-metadata-token-ttl-seconds", "60", "Forwarded", "for=10.0.0.1"}, 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(s, request(http.MethodPut, imdsTokenPath, tc.header...))
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d (%s)", rec.Code, tc.status, rec.Body)
			}
			if tc.status != 200 {
				return
			}
			if got, want := rec.Header().Get("X-aws-ec2-metadata-token-ttl-seconds"), tc.header[1]; got != want {
				t.Errorf("TTL header = %q, want %q echoed", got, want)
			}
			if n := rec.Body.Len(); n < 40 || strings.ContainsAny(rec.Body.String(), "\r\n ") {
				t.Errorf("token %q: want >= 40 characters, no blanks", rec.Body)
			}
		})
	}
	t.Run("two ttl headers", func(t *testing.T) {
		r := request(http.MethodPut, imdsTokenPath)
		r.Header.Add("X-aws-ec2-metadata-token-ttl-seconds", "60")
		r.Header.Add("X-aws-ec2-metadata-token-ttl-seconds", "60")
		if rec := serve(s, r); rec.Code != 400 {
			t.Errorf("status = %d, want 400", rec.Code)
		}
	})
	t.Run("non-loopback host", func(t *testing.T) {
		r := request(http.MethodPut, imdsTokenPath, "X-aws-ec2-metadata-token-ttl-seconds", "60")
		r.Host = "169.254.169.254"
		if rec := serve(s, r); rec.Code != 403 {
			t.Errorf("status = %d, want 403 (Host guard)", rec.Code)
		}
	})
	t.Run("GET on token path", func(t *testing.T) {
		if rec := serve(s, request(http.MethodGet, imdsTokenPath)); rec.Code != 405 {
			t.Errorf("status = %d, want 405", rec.Code)
		}
	})
	t.Run("tokens differ", func(t *testing.T) {
		if a, b := imdsToken(t, s, "60"), imdsToken(t, s, "60"); a == b {
			t.Error("two PUTs returned the same token")
		}
	})
}

func TestIMDSCredentials(t *testing.T) {
	creds := testCreds()
	s := newIMDSServer(t, &fakeKeys{creds: creds})
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	tok := imdsToken(t, s, "21600")
	short := imdsToken(t, s, "1")
	now = now.Add(time.Second) // short has just expired

	list := imdsCredsPath + "/"
	role := imdsCredsPath + "/" + testProfile
	tests := []struct {
		name   string
		path   string
		header []string
		status int
		body   string // exact body for 200s, unless a JSON document
	}{
		{"list", list, []string{"X-aws-ec2-metadata-token", tok}, 200, testProfile},
		{"list without slash", imdsCredsPath, []string{"X-aws-ec2-metadata-token", tok}, 200, testProfile},
		{"list no token", list, nil, 401, ""},
		{"list unknown token", list, []string{"X-aws-ec2-metadata-token", tok + "x"}, 401, ""},
		{"list expired token", list, []string{"X-aws-ec2-metadata-token", short}, 401, ""},
		{"list empty token", list, []string{"X-aws-ec2-metadata-token", ""}, 401, ""},
		{"role", role, []string{"X-aws-ec2-metadata-token", tok}, 200, ""},
		{"role no token", role, nil, 401, ""},
		{"role with client token only", role, []string{"Authorization", testToken}, 401, ""},
		{"role expired token", role, []string{"X-aws-ec2-metadata-token", short}, 401, ""},
		{"other role", imdsCredsPath + "/admin", []string{"X-aws-ec2-metadata-token", tok}, 404, ""},
		{"other metadata", "/latest/meta-data/instance-id", []string{"X-aws-ec2-metadata-token", tok}, 404, ""},
		{"x-forwarded-for", role, []string{"X-aws-ec2-metadata-token", tok, "X-Forwarded-For", "10.0.0.1"}, 403, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(s, request(http.MethodGet, tc.path, tc.header...))
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d (%s)", rec.Code, tc.status, rec.Body)
			}
			switch {
			case tc.status != 200:
				checkJSONError(t, rec, tc.status, map[int]string{401: codeUnauthorized, 403: codeForbidden, 404: codeNotFound}[tc.status])
			case tc.body != "":
				if rec.Body.String() != tc.body {
					t.Errorf("body = %q, want %q (no trailing newline)", rec.Body, tc.body)
				}
			default:
				var doc map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
					t.Fatalf("body %q: %v", rec.Body, err)
				}
				want := map[string]any{
					"Code": "Success", "LastUpdated": "2030-01-01T00:00:01Z", "Type": "AWS-HMAC",
					"AccessKeyId": creds.AccessKeyID, "SecretAccessKey": creds.SecretAccessKey,
					"Token": "", "Expiration": "2030-01-02T03:04:05Z",
				}
				if len(doc) != len(want) {
					t.Errorf("document has %d members, want %d: %s", len(doc), len(want), rec.Body)
				}
				for k, v := range want {
					if doc[k] != v {
						t.Errorf("%s = %#v, want %#v", k, doc[k], v)
					}
				}
			}
		})
	}
}

func TestIMDSUnavailableKey(t *testing.T) {
	s := newIMDSServer(t, &fakeKeys{err: broker.ErrNoValidKey})
	tok := imdsToken(t, s, "60")
	rec := serve(s, request(http.MethodGet, imdsCredsPath+"/"+testProfile, "X-aws-ec2-metadata-token", tok))
	checkJSONError(t, rec, http.StatusServiceUnavailable, codeNoValidKey)
}

func TestIMDSOffByDefault(t *testing.T) {
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()})
	rec := serve(s, request(http.MethodPut, imdsTokenPath, "X-aws-ec2-metadata-token-ttl-seconds", "60"))
	if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("PUT token without IMDSProfile: status %d, want 404 or 405", rec.Code)
	}
}

// Peers for the store's tests.
var (
	victimPeer   = peerKey{uid: 1000, hasUID: true}
	attackerPeer = peerKey{uid: 65534, hasUID: true}
)

func TestIMDSTokenStoreIsBounded(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newIMDS("r", func() time.Time { return now })
	// One peer: its oldest tokens go first, whatever their expiry.
	var toks []string
	for i := 0; i < imdsMaxTokensPerPeer+10; i++ {
		toks = append(toks, m.issue(victimPeer, time.Duration(imdsMaxTTL-i)*time.Second))
	}
	if n := len(m.tokens); n != imdsMaxTokensPerPeer {
		t.Errorf("store holds %d tokens of one peer, want %d", n, imdsMaxTokensPerPeer)
	}
	for i, tok := range toks {
		if want := i >= 10; m.valid(tok) != want {
			t.Errorf("token %d valid = %v, want %v (the peer's 10 oldest dropped)", i, !want, want)
		}
	}
	// Many peers: the store stays bounded; the oldest token of all goes.
	m = newIMDS("r", func() time.Time { return now })
	first := m.issue(peerKey{uid: 0, hasUID: true}, time.Hour)
	for uid := uint32(1); uid < imdsMaxTokens/imdsMaxTokensPerPeer+5; uid++ {
		for range imdsMaxTokensPerPeer {
			m.issue(peerKey{uid: uid, hasUID: true}, 2*time.Hour)
		}
	}
	if n := len(m.tokens); n > imdsMaxTokens {
		t.Errorf("store holds %d tokens, want at most %d", n, imdsMaxTokens)
	}
	if m.valid(first) {
		t.Error("the oldest token survived a full store")
	}
	checkIMDSLinks(t, m)
	// Expired tokens are dropped when presented.
	m = newIMDS("r", func() time.Time { return now })
	short := m.issue(victimPeer, time.Second)
	now = now.Add(time.Minute)
	keep := m.issue(victimPeer, time.Hour)
	if m.valid(short) || !m.valid(keep) || len(m.tokens) != 1 || len(m.owners) != 1 {
		t.Errorf("after expiry: %d tokens, %d owners; want only the new one", len(m.tokens), len(m.owners))
	}
}

// checkIMDSLinks checks the store's lists agree with its map.
func checkIMDSLinks(t *testing.T, m *imds) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for s := m.all.first; s != nil; s = s.next {
		if m.tokens[s.key] != s {
			t.Fatalf("global list holds a token the map does not")
		}
		n++
	}
	per := 0
	for k, o := range m.owners {
		c := 0
		for s := o.first; s != nil; s = s.ownerNext {
			if s.owner != o {
				t.Fatalf("owner %s lists another owner's token", k)
			}
			c++
		}
		if c != o.n || c == 0 || c > imdsMaxTokensPerPeer {
			t.Fatalf("owner %s: %d listed, n = %d", k, c, o.n)
		}
		per += c
	}
	if n != len(m.tokens) || per != n {
		t.Fatalf("map %d, global list %d, owners' lists %d", len(m.tokens), n, per)
	}
}

// withPeer returns r as if the connection limiter had identified peer.
func withPeer(r *http.Request, peer peerKey) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), connPeerKey{}, peer))
}

// TestIMDSFloodEvictsOnlyTheFlooder is finding 6 of issue 11: one user's
// ~4,100 PUTs with the maximum TTL (in well under a second) used to evict
// every other user's session token. Now they evict only the flooder's own.
func TestIMDSFloodEvictsOnlyTheFlooder(t *testing.T) {
	s := newIMDSServer(t, &fakeKeys{creds: testCreds()})
	put := func(peer peerKey) string {
		rec := serve(s, withPeer(request(http.MethodPut, imdsTokenPath, "X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(imdsMaxTTL)), peer))
		if rec.Code != http.StatusOK {
			t.Fatalf("PUT: %d %s", rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	victim := put(victimPeer)
	start := time.Now()
	var flood []string
	for range imdsMaxTokens + 4 {
		flood = append(flood, put(attackerPeer))
	}
	t.Logf("%d PUTs in %s", len(flood), time.Since(start))
	role := imdsCredsPath + "/" + testProfile
	if rec := serve(s, withPeer(request(http.MethodGet, role, "X-aws-ec2-metadata-token", victim), victimPeer)); rec.Code != http.StatusOK {
		t.Fatalf("victim's token after the flood: %d %s; want it still valid", rec.Code, rec.Body)
	}
	if !s.imds.valid(flood[len(flood)-1]) || s.imds.valid(flood[0]) {
		t.Error("want the flooder's newest token valid and its oldest dropped")
	}
	if n := s.imds.owners[attackerPeer].n; n != imdsMaxTokensPerPeer {
		t.Errorf("flooder holds %d tokens, want its quota %d", n, imdsMaxTokensPerPeer)
	}
	checkIMDSLinks(t, s.imds)
}

// BenchmarkIMDSPutFullStore measures a PUT when the store is full: 64
// peers at their quota, the PUT from one of them (drops its own oldest)
// or from a new peer (drops the oldest of all).
func BenchmarkIMDSPutFullStore(b *testing.B) {
	s, _ := newTestServer(b, &fakeKeys{creds: testCreds()}, func(o *Options) { o.IMDSProfile = testProfile })
	for uid := range uint32(imdsMaxTokens / imdsMaxTokensPerPeer) {
		for range imdsMaxTokensPerPeer {
			s.imds.issue(peerKey{uid: uid, hasUID: true}, time.Hour)
		}
	}
	for _, bc := range []struct {
		name string
		peer peerKey
	}{{"peer at quota", peerKey{uid: 3, hasUID: true}}, {"new peer", peerKey{uid: 99999, hasUID: true}}} {
		b.Run(bc.name, func(b *testing.B) {
			r := withPeer(request(http.MethodPut, imdsTokenPath, "X-aws-ec2-metadata-token-ttl-seconds", "21600"), bc.peer)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, r)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code)
				}
			}
		})
	}
}

func TestIMDSConcurrentUse(t *testing.T) {
	s := newIMDSServer(t, &fakeKeys{creds: testCreds()})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		// One peer per goroutine: a peer issuing more than its quota
		// between a PUT and its GET would lose the token, by design.
		peer := peerKey{uid: uint32(i), hasUID: true}
		wg.Go(func() {
			for j := 0; j < 50; j++ {
				rec := serve(s, withPeer(request(http.MethodPut, imdsTokenPath, "X-aws-ec2-metadata-token-ttl-seconds", "60"), peer))
				tok := rec.Body.String()
				rec = serve(s, request(http.MethodGet, imdsCredsPath+"/"+testProfile, "X-aws-ec2-metadata-token", tok))
				if rec.Code != 200 {
					t.Errorf("status %d", rec.Code)
					return
				}
			}
		})
	}
	wg.Wait()
}

// An IMDS serve is counted and audited like a /v1/credentials one.
func TestIMDSCountedAndAudited(t *testing.T) {
	creds := testCreds()
	keys := &fakeKeys{creds: creds}
	reqs := &countingRequests{}
	s, logs := newTestServer(t, keys, func(o *Options) {
		o.IMDSProfile = testProfile
		o.Requests = reqs
	})
	tok := imdsToken(t, s, "60")
	role := imdsCredsPath + "/" + testProfile
	if rec := serve(s, request(http.MethodGet, role, "X-aws-ec2-metadata-token", tok)); rec.Code != http.StatusOK {
		t.Fatalf("GET role: %d %s", rec.Code, rec.Body)
	}
	keys.set(nil, &broker.UnavailableError{Profile: testProfile})
	if rec := serve(s, request(http.MethodGet, role, "X-aws-ec2-metadata-token", tok)); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("GET role without a key: %d %s", rec.Code, rec.Body)
	}
	reqs.mu.Lock()
	ok, unavailable := reqs.counts[testProfile+"/"+OutcomeOK.String()], reqs.counts[testProfile+"/"+OutcomeNoValidKey.String()]
	reqs.mu.Unlock()
	if ok != 1 || unavailable != 1 {
		t.Errorf("counts = %v, want one ok and one no_valid_key", reqs.counts)
	}
	var served, refused int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, `"audit":true`) && strings.Contains(line, `"via":"imds"`) {
			switch {
			case strings.Contains(line, `"event":"credential_grant"`):
				served++
			case strings.Contains(line, `"event":"credential_refusal"`):
				refused++
			}
		}
		if strings.Contains(line, creds.SecretAccessKey) || strings.Contains(line, tok) {
			t.Errorf("log line holds a secret or the IMDS token: %s", line)
		}
	}
	if served != 1 || refused != 1 {
		t.Errorf("IMDS audit lines: %d served, %d not served; want 1 and 1\n%s", served, refused, logs)
	}
}
