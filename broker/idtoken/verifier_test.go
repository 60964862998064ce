package idtoken

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestVerifyValid(t *testing.T) {
	k := keys()
	tests := []struct {
		name string
		alg  jose.SignatureAlgorithm
		key  any
		kid  string
	}{
		{"RS256", jose.RS256, k.rsa1, "r1"},
		{"RS512", jose.RS512, k.rsa1, "r1"},
		{"PS256", jose.PS256, k.rsa1, "r1"},
		{"ES256", jose.ES256, k.ec1, "e1"},
		{"EdDSA", jose.EdDSA, k.ed1, "d1"},
		{"RS256 without kid", jose.RS256, k.rsa2, ""},
		{"ES256 without kid", jose.ES256, k.ec1, ""},
	}
	// One issuer and verifier for all: the keys are fetched once.
	is := newTestIssuer(t,
		publicJWK(k.rsa1, "r1", ""), publicJWK(k.rsa2, "r2", "RS256"),
		publicJWK(k.ec1, "e1", "ES256"), publicJWK(k.ed1, "d1", "EdDSA"))
	clk := newFakeClock()
	v := newTestVerifier(t, is, clk, VerifierOptions{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := sign(t, tt.alg, tt.key, tt.kid, claimsFor(is.URL(), clk.Now()))
			c, err := v.Verify(t.Context(), raw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Issuer != is.URL() || c.Subject != "system:serviceaccount:ml:loader" || c.Pod != "loader-5d9c7b6f4-x2x9q" || c.Algorithm != string(tt.alg) || c.KeyID != tt.kid {
				t.Errorf("Verify = %+v", *c)
			}
		})
	}
	if d, j := is.discoveryHits.Load(), is.jwksHits.Load(); d != 1 || j != 1 {
		t.Errorf("discovery hits %d, JWKS hits %d; want 1 and 1", d, j)
	}
}

func TestVerifyRefusals(t *testing.T) {
	k := keys()
	rsaDER, err := x509.MarshalPKIXPublicKey(&k.rsa1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// token builds the token for issuer iss at now.
		token func(t *testing.T, iss string, now time.Time) string
		want  Reason
		// fetches is the JWKS fetches it costs.
		fetches int64
	}{
		{"forged: payload altered", func(t *testing.T, iss string, now time.Time) string {
			h, _, s := splitToken(sign(t, jose.RS256, k.rsa1, "r1", claimsFor(iss, now)))
			_, p, _ := splitToken(sign(t, jose.RS256, k.rsa1, "r1", with(claimsFor(iss, now), "sub", "system:serviceaccount:kube-system:admin")))
			return h + "." + p + "." + s
		}, ReasonSignature, 1},
		{"forged: ES256 signature altered", func(t *testing.T, iss string, now time.Time) string {
			raw := sign(t, jose.ES256, k.ec1, "e1", claimsFor(iss, now))
			h, p, s := splitToken(raw)
			flip := []byte(s)
			flip[5] = 'A'
			if s[5] == 'A' {
				flip[5] = 'B'
			}
			return h + "." + p + "." + string(flip)
		}, ReasonSignature, 1},
		{"signed by another key under a published kid", func(t *testing.T, iss string, now time.Time) string {
			return sign(t, jose.ES256, k.ec2, "e1", claimsFor(iss, now))
		}, ReasonSignature, 1},
		{"no kid, no published key verifies", func(t *testing.T, iss string, now time.Time) string {
			return sign(t, jose.ES256, k.ec2, "", claimsFor(iss, now))
		}, ReasonSignature, 1},
		{"alg none", func(t *testing.T, iss string, now time.Time) string {
			return unsigned(`{"alg":"none","kid":"r1"}`, mustJSON(t, claimsFor(iss, now)), "")
		}, ReasonAlgorithm, 0},
		{"HS256 with the RSA public key as HMAC secret", func(t *testing.T, iss string, now time.Time) string {
			return sign(t, jose.HS256, rsaDER, "r1", claimsFor(iss, now))
		}, ReasonAlgorithm, 0},
		{"alg not allow-listed", func(t *testing.T, iss string, now time.Time) string {
			return unsigned(`{"alg":"ES256K","kid":"e1"}`, mustJSON(t, claimsFor(iss, now)), b64(strings.Repeat("s", 64)))
		}, ReasonAlgorithm, 0},
		{"alg differently cased", func(t *testing.T, iss string, now time.Time) string {
			return unsigned(`{"alg":"rs256","kid":"r1"}`, mustJSON(t, claimsFor(iss, now)), b64(strings.Repeat("s", 256)))
		}, ReasonAlgorithm, 0},
		{"differently cased ALG member ignored", func(t *testing.T, iss string, now time.Time) string {
			return unsigned(`{"alg":"RS256","ALG":"none","kid":"r1"}`, mustJSON(t, claimsFor(iss, now)), b64(strings.Repeat("s", 256)))
		}, ReasonSignature, 1},
		{"iss not allowed: no fetch", func(t *testing.T, iss string, now time.Time) string {
			return sign(t, jose.RS256, k.rsa1, "r1", claimsFor("https://evil.example", now))
		}, ReasonIssuer, 0},
		{"aud lacks the audience", func(t *testing.T, iss string, now time.Time) string {
			return sign(t, jose.RS256, k.rsa1, "r1", with(claimsFor(iss, now), "aud", "https://kubernetes.default.svc"))
		}, ReasonAudience, 0},
		{"expired", func(t *testing.T, iss string, now time.Time) string {
			return sign(t, jose.RS256, k.rsa1, "r1", claimsFor(iss, now.Add(-time.Hour-DefaultLeeway)))
		}, ReasonExpired, 0},
		{"not yet valid", func(t *testing.T, iss string, now time.Time) string {
			return sign(t, jose.RS256, k.rsa1, "r1", with(claimsFor(iss, now), "nbf", now.Add(time.Minute).Unix()))
		}, ReasonNotYetValid, 0},
		{"kid of an RSA key on an ES256 token", func(t *testing.T, iss string, now time.Time) string {
			return sign(t, jose.ES256, k.ec1, "r1", claimsFor(iss, now))
		}, ReasonSignature, 1},
		{"garbage", func(t *testing.T, iss string, now time.Time) string { return "not-a-jwt" }, ReasonMalformed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"), publicJWK(k.ec1, "e1", "ES256"))
			clk := newFakeClock()
			v := newTestVerifier(t, is, clk, VerifierOptions{})
			raw := tt.token(t, is.URL(), clk.Now())
			c, err := v.Verify(t.Context(), raw)
			if c != nil {
				t.Errorf("Verify returned claims %+v", *c)
			}
			wantRefusal(t, err, tt.want, raw)
			if got := is.jwksHits.Load(); got != tt.fetches {
				t.Errorf("JWKS fetches = %d, want %d", got, tt.fetches)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := jsonMarshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestVerifyUnknownKid: an unknown kid costs one refetch, then is refused;
// another right after costs none.
func TestVerifyUnknownKid(t *testing.T) {
	k := keys()
	is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
	clk := newFakeClock()
	v := newTestVerifier(t, is, clk, VerifierOptions{MinRefetch: time.Minute})
	if _, err := v.Verify(t.Context(), sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	clk.Advance(time.Minute)
	unknown := sign(t, jose.RS256, k.rsa2, "r2", claimsFor(is.URL(), clk.Now()))
	for i, wantHits := range []int64{2, 2} {
		_, err := v.Verify(t.Context(), unknown)
		wantRefusal(t, err, ReasonSignature, unknown)
		if got := is.jwksHits.Load(); got != wantHits {
			t.Errorf("attempt %d: JWKS hits = %d, want %d", i+1, got, wantHits)
		}
	}
	// The known key still verifies, with no fetch.
	if _, err := v.Verify(t.Context(), sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := is.jwksHits.Load(); got != 2 {
		t.Errorf("JWKS hits = %d, want 2", got)
	}
}

// TestVerifyRotation: a new key published at the JWKS is picked up by the
// first token that names it.
func TestVerifyRotation(t *testing.T) {
	k := keys()
	is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
	clk := newFakeClock()
	v := newTestVerifier(t, is, clk, VerifierOptions{})
	if _, err := v.Verify(t.Context(), sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))); err != nil {
		t.Fatalf("Verify old key: %v", err)
	}
	clk.Advance(DefaultMinRefetch)
	is.setKeys(publicJWK(k.rsa1, "r1", "RS256"), publicJWK(k.ec1, "e2", "ES256"))
	c, err := v.Verify(t.Context(), sign(t, jose.ES256, k.ec1, "e2", claimsFor(is.URL(), clk.Now())))
	if err != nil {
		t.Fatalf("Verify new key: %v", err)
	}
	if c.KeyID != "e2" {
		t.Errorf("KeyID = %q", c.KeyID)
	}
	if got := is.jwksHits.Load(); got != 2 {
		t.Errorf("JWKS hits = %d, want 2", got)
	}
	// The old key is gone from the JWKS; once refetched it no longer verifies.
	is.setKeys(publicJWK(k.ec1, "e2", "ES256"))
	clk.Advance(DefaultMaxAge)
	old := sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))
	if _, err := v.Verify(t.Context(), old); err != nil {
		t.Fatalf("Verify with stale keys: %v (the refetch runs in the background)", err)
	}
	waitFetches(v)
	_, err = v.Verify(t.Context(), old)
	wantRefusal(t, err, ReasonSignature, old)
}

// TestVerifyUnknownKidFlood: 100 concurrent tokens with unknown kids within
// MinRefetch cost exactly one fetch; after MinRefetch one more is allowed.
func TestVerifyUnknownKidFlood(t *testing.T) {
	k := keys()
	is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
	clk := newFakeClock()
	v := newTestVerifier(t, is, clk, VerifierOptions{})
	if _, err := v.Verify(t.Context(), sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	clk.Advance(DefaultMinRefetch)
	tokens := make([]string, 100)
	for i := range tokens {
		tokens[i] = sign(t, jose.ES256, k.ec2, fmt.Sprintf("attacker-%d", i), claimsFor(is.URL(), clk.Now()))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(tokens))
	for i, raw := range tokens {
		wg.Go(func() {
			_, errs[i] = v.Verify(context.Background(), raw)
		})
	}
	wg.Wait()
	for i, err := range errs {
		wantRefusal(t, err, ReasonSignature, tokens[i])
	}
	if got := is.jwksHits.Load(); got != 2 {
		t.Errorf("JWKS hits = %d, want 2 (1 initial + 1 for the flood)", got)
	}
	clk.Advance(DefaultMinRefetch - time.Nanosecond)
	_, err := v.Verify(t.Context(), tokens[0])
	wantRefusal(t, err, ReasonSignature, tokens[0])
	if got := is.jwksHits.Load(); got != 2 {
		t.Errorf("JWKS hits just before MinRefetch = %d, want 2", got)
	}
	clk.Advance(time.Nanosecond)
	_, err = v.Verify(t.Context(), tokens[0])
	wantRefusal(t, err, ReasonSignature, tokens[0])
	if got := is.jwksHits.Load(); got != 3 {
		t.Errorf("JWKS hits after MinRefetch = %d, want 3", got)
	}
}

// TestVerifyColdFlood: 100 concurrent first tokens share one discovery and
// one JWKS fetch.
func TestVerifyColdFlood(t *testing.T) {
	k := keys()
	is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
	clk := newFakeClock()
	v := newTestVerifier(t, is, clk, VerifierOptions{})
	raw := sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))
	var wg sync.WaitGroup
	errs := make([]error, 100)
	for i := range errs {
		wg.Go(func() { _, errs[i] = v.Verify(context.Background(), raw) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}
	if d, j := is.discoveryHits.Load(), is.jwksHits.Load(); d != 1 || j != 1 {
		t.Errorf("discovery hits %d, JWKS hits %d; want 1 and 1", d, j)
	}
}

// TestVerifyKeysUnavailable: with the issuer down, a token needing keys it
// cannot get is ReasonKeys (and retried at most once per MinRefetch), while
// a key already cached still verifies.
func TestVerifyKeysUnavailable(t *testing.T) {
	k := keys()
	t.Run("cold", func(t *testing.T) {
		is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
		is.setDown(true)
		clk := newFakeClock()
		v := newTestVerifier(t, is, clk, VerifierOptions{})
		raw := sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))
		_, err := v.Verify(t.Context(), raw)
		e := wantRefusal(t, err, ReasonKeys, raw)
		if !strings.Contains(e.Detail, "status 503") || errors.Unwrap(e) == nil {
			t.Errorf("error %v does not name the fetch failure", e)
		}
		_, err = v.Verify(t.Context(), raw)
		wantRefusal(t, err, ReasonKeys, raw)
		if got := is.discoveryHits.Load(); got != 1 {
			t.Errorf("discovery hits = %d, want 1 (retry rate-limited)", got)
		}
		// Back up: the next attempt after MinRefetch succeeds.
		is.setDown(false)
		clk.Advance(DefaultMinRefetch)
		if _, err := v.Verify(t.Context(), raw); err != nil {
			t.Fatalf("Verify after recovery: %v", err)
		}
	})
	t.Run("warm", func(t *testing.T) {
		is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
		clk := newFakeClock()
		v := newTestVerifier(t, is, clk, VerifierOptions{})
		if _, err := v.Verify(t.Context(), sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		is.setDown(true)
		clk.Advance(DefaultMaxAge) // stale: each use tries a refetch, rate-limited
		for range 3 {
			if _, err := v.Verify(t.Context(), sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))); err != nil {
				t.Fatalf("Verify with a cached key while the issuer is down: %v", err)
			}
			waitFetches(v)
		}
		if got := is.jwksHits.Load(); got != 2 {
			t.Errorf("JWKS hits = %d, want 2 (the background refetch is rate-limited)", got)
		}
		clk.Advance(DefaultMinRefetch)
		unknown := sign(t, jose.RS256, k.rsa2, "r2", claimsFor(is.URL(), clk.Now()))
		_, err := v.Verify(t.Context(), unknown)
		wantRefusal(t, err, ReasonKeys, unknown)
		if _, err := v.Verify(t.Context(), sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))); err != nil {
			t.Fatalf("Verify with a cached key after a failed refetch: %v", err)
		}
	})
}

// TestVerifyMaxAge: a key set older than MaxAge is refetched in the
// background of a call that still uses it.
func TestVerifyMaxAge(t *testing.T) {
	k := keys()
	is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
	clk := newFakeClock()
	v := newTestVerifier(t, is, clk, VerifierOptions{MaxAge: 10 * time.Minute})
	raw := func() string { return sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now())) }
	for _, step := range []struct {
		advance time.Duration
		hits    int64
	}{{0, 1}, {10*time.Minute - time.Nanosecond, 1}, {time.Nanosecond, 2}, {time.Minute, 2}} {
		clk.Advance(step.advance)
		if _, err := v.Verify(t.Context(), raw()); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		waitFetches(v)
		if got := is.jwksHits.Load(); got != step.hits {
			t.Errorf("after +%v: JWKS hits = %d, want %d", step.advance, got, step.hits)
		}
	}
	if got := is.discoveryHits.Load(); got != 1 {
		t.Errorf("discovery hits = %d, want 1 (jwks_uri is remembered)", got)
	}
}

func TestVerifyDiscoveryRefused(t *testing.T) {
	k := keys()
	tests := []struct {
		name   string
		setup  func(is *testIssuer)
		detail string
	}{
		{"issuer mismatch", func(is *testIssuer) { is.discoveryIssuer = "https://evil.example" }, "names issuer"},
		{"issuer with trailing slash", func(is *testIssuer) { is.discoveryIssuer = is.URL() + "/" }, "names issuer"},
		{"jwks_uri plain http off loopback", func(is *testIssuer) { is.jwksURI = "http://keys.example/jwks" }, "not loopback"},
		{"jwks_uri missing", func(is *testIssuer) { is.jwksURI = " " }, "jwks_uri"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
			is.mu.Lock()
			tt.setup(is)
			is.mu.Unlock()
			clk := newFakeClock()
			v := newTestVerifier(t, is, clk, VerifierOptions{})
			raw := sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))
			_, err := v.Verify(t.Context(), raw)
			e := wantRefusal(t, err, ReasonKeys, raw)
			if !strings.Contains(e.Detail, tt.detail) {
				t.Errorf("detail %q does not mention %q", e.Detail, tt.detail)
			}
			if got := is.jwksHits.Load(); got != 0 {
				t.Errorf("JWKS hits = %d, want 0", got)
			}
		})
	}
}

func TestVerifyJWKSURL(t *testing.T) {
	k := keys()
	is := newTestIssuer(t, publicJWK(k.ec1, "e1", "ES256"))
	clk := newFakeClock()
	const iss = "https://oidc.cks.coreweave.com/id/8f3d2c1b" // not fetched
	v, err := NewVerifier(Policy{Issuers: []string{iss, "kubernetes/serviceaccount"}, Audience: testAudience},
		VerifierOptions{HTTPClient: is.srv.Client(), Now: clk.Now, JWKSURL: is.URL() + "/jwks"})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	for _, issuer := range []string{iss, "kubernetes/serviceaccount"} {
		if _, err := v.Verify(t.Context(), sign(t, jose.ES256, k.ec1, "e1", claimsFor(issuer, clk.Now()))); err != nil {
			t.Fatalf("Verify(%s): %v", issuer, err)
		}
	}
	if d, j := is.discoveryHits.Load(), is.jwksHits.Load(); d != 0 || j != 1 {
		t.Errorf("discovery hits %d, JWKS hits %d; want 0 and 1 (one set shared by both issuers)", d, j)
	}
}

// TestVerifyContext: a caller whose context ends stops waiting for a slow
// fetch, with ReasonKeys wrapping the context error; the fetch runs on and
// serves the next caller.
func TestVerifyContext(t *testing.T) {
	k := keys()
	is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	is.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/jwks" {
			started <- struct{}{}
			<-release
		}
		return false
	})
	clk := newFakeClock()
	v := newTestVerifier(t, is, clk, VerifierOptions{})
	raw := sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { _, err := v.Verify(ctx, raw); errc <- err }()
	<-started
	cancel()
	err := <-errc
	wantRefusal(t, err, ReasonKeys, raw)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want it to wrap context.Canceled", err)
	}
	close(release)
	waitFetches(v)
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Fatalf("Verify after the shared fetch finished: %v", err)
	}
	if got := is.jwksHits.Load(); got != 1 {
		t.Errorf("JWKS hits = %d, want 1", got)
	}
}

// TestVerifyJWKSContents: keys that must not be used are skipped, and a set
// with none usable is a failed fetch.
func TestVerifyJWKSContents(t *testing.T) {
	k := keys()
	small, err := rsaKey(1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		jwks []jose.JSONWebKey
		key  any
		alg  jose.SignatureAlgorithm
		kid  string
		want Reason
	}{
		{"encryption key skipped", []jose.JSONWebKey{{Key: &k.rsa1.PublicKey, KeyID: "r1", Use: "enc"}, publicJWK(k.ec1, "e1", "")}, k.rsa1, jose.RS256, "r1", ReasonSignature},
		{"key alg must match", []jose.JSONWebKey{publicJWK(k.rsa1, "r1", "PS256")}, k.rsa1, jose.RS256, "r1", ReasonSignature},
		{"symmetric key never used", []jose.JSONWebKey{{Key: []byte(strings.Repeat("k", 32)), KeyID: "h1"}}, k.rsa1, jose.RS256, "h1", ReasonKeys},
		{"RSA under 2048 bits skipped", []jose.JSONWebKey{publicJWK(small, "s1", "")}, small, jose.RS256, "s1", ReasonKeys},
		{"private key published: public half used", []jose.JSONWebKey{{Key: k.ec1, KeyID: "e1", Use: "sig"}}, k.ec1, jose.ES256, "e1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := newTestIssuer(t, tt.jwks...)
			clk := newFakeClock()
			v := newTestVerifier(t, is, clk, VerifierOptions{})
			raw := sign(t, tt.alg, tt.key, tt.kid, claimsFor(is.URL(), clk.Now()))
			_, err := v.Verify(t.Context(), raw)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			wantRefusal(t, err, tt.want, raw)
		})
	}
}

func TestNewVerifierURLs(t *testing.T) {
	tests := []struct {
		name    string
		issuers []string
		jwksURL string
		wantErr string // "" for accepted
	}{
		{"https issuer", []string{"https://oidc.example/id/1"}, "", ""},
		{"http to 127.0.0.1", []string{"http://127.0.0.1:8080"}, "", ""},
		{"http to localhost", []string{"http://localhost:8080/oidc"}, "", ""},
		{"http to ::1", []string{"http://[::1]:8080"}, "", ""},
		{"http to a remote host", []string{"http://oidc.example"}, "", "not loopback"},
		{"http to a name that starts with 127", []string{"http://127.0.0.1.evil.example"}, "", "not loopback"},
		{"ftp", []string{"ftp://oidc.example"}, "", "scheme"},
		{"not a URL issuer without JWKS URL", []string{"kubernetes/serviceaccount"}, "", "no host"},
		{"user info", []string{"https://user:pw@oidc.example"}, "", "user information"},
		{"JWKS URL https", []string{"kubernetes/serviceaccount"}, "https://oidc.example/keys", ""},
		{"JWKS URL http remote", []string{"https://oidc.example"}, "http://oidc.example/keys", "not loopback"},
		{"no issuers", nil, "", "no allowed issuers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(Policy{Issuers: tt.issuers, Audience: testAudience}, VerifierOptions{JWKSURL: tt.jwksURL})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewVerifier: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewVerifier = %v, want an error mentioning %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Errorf("error shows a password: %v", err)
			}
		})
	}
}

// TestVerifyRedirectOffLoopbackRefused: a redirect to a URL that fails the
// URL rules is not followed.
func TestVerifyRedirectOffLoopbackRefused(t *testing.T) {
	k := keys()
	is := newTestIssuer(t, publicJWK(k.rsa1, "r1", "RS256"))
	is.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/jwks" {
			http.Redirect(w, r, "http://keys.example/jwks", http.StatusFound)
			return true
		}
		return false
	})
	clk := newFakeClock()
	v := newTestVerifier(t, is, clk, VerifierOptions{})
	raw := sign(t, jose.RS256, k.rsa1, "r1", claimsFor(is.URL(), clk.Now()))
	_, err := v.Verify(t.Context(), raw)
	e := wantRefusal(t, err, ReasonKeys, raw)
	if !strings.Contains(e.Detail, "redirect refused") {
		t.Errorf("detail = %q", e.Detail)
	}
}
