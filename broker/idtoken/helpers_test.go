package idtoken

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

const testAudience = "https://coreweave.com/iam"

// testKeys are generated once per test binary: RSA generation is slow
// under -race.
type testKeys struct {
	rsa1, rsa2 *rsa.PrivateKey
	ec1, ec2   *ecdsa.PrivateKey
	ed1        ed25519.PrivateKey
}

var keys = sync.OnceValue(func() testKeys {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	var k testKeys
	var err error
	k.rsa1, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec1, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	_, k.ed1, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return k
})

// publicJWK is the JWKS entry for priv's public key.
func publicJWK(priv any, kid, alg string) jose.JSONWebKey {
	var pub any
	switch p := priv.(type) {
	case *rsa.PrivateKey:
		pub = &p.PublicKey
	case *ecdsa.PrivateKey:
		pub = &p.PublicKey
	case ed25519.PrivateKey:
		pub = p.Public()
	default:
		panic("publicJWK: unsupported key")
	}
	return jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: alg, Use: "sig"}
}

// sign returns a compact JWS of claims (marshalled to JSON unless it is
// already a string) signed with key; kid "" leaves kid out of the header.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	var k any = key
	if kid != "" {
		k = jose.JSONWebKey{Key: key, KeyID: kid}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatalf("NewSigner(%s): %v", alg, err)
	}
	payload, ok := claims.(string)
	if !ok {
		b, err := json.Marshal(claims)
		if err != nil {
			t.Fatal(err)
		}
		payload = string(b)
	}
	obj, err := signer.Sign([]byte(payload))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// b64 is base64url without padding, as JWS uses.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// unsigned assembles a token from a raw header and claims and a raw
// signature segment, for inputs no signer would produce.
func unsigned(header, claims, sig string) string {
	return b64(header) + "." + b64(claims) + "." + sig
}

// claimsFor returns Kubernetes-style claims valid from now for an hour.
func claimsFor(iss string, now time.Time) map[string]any {
	return map[string]any{
		"iss": iss,
		"sub": "system:serviceaccount:ml:loader",
		"aud": []string{testAudience},
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"jti": "6e1f7f2a-3f43-4c55-9b7e-8a4c1f0b2d11",
		"kubernetes.io": map[string]any{
			"namespace":      "ml",
			"node":           map[string]string{"name": "gpu-node-7", "uid": "0b6a4b0e-1c7e-4f6e-a1e3-3f1f64a1e9c2"},
			"pod":            map[string]string{"name": "loader-5d9c7b6f4-x2x9q", "uid": "a3b9a1c4-5e55-4b4f-8f3c-7a1b2c3d4e5f"},
			"serviceaccount": map[string]string{"name": "loader", "uid": "f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b"},
			"warnafter":      now.Add(48 * time.Minute).Unix(),
		},
	}
}

// with returns a copy of m with k set to v (or removed when v is nil).
func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func rsaKey(bits int) (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, bits) }

// newFakeClock returns an injected clock that moves only when told.
func newFakeClock() *cwapitest.Clock {
	return cwapitest.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
}

// testIssuer is an OIDC issuer on loopback: a discovery document and a
// JWKS, with hit counters and switches for failure cases.
type testIssuer struct {
	srv *httptest.Server

	mu              sync.Mutex
	keys            []jose.JSONWebKey
	down            bool   // both endpoints answer 503
	discoveryIssuer string // "issuer" in the discovery document; default the real one
	jwksURI         string // jwks_uri; default the server's /jwks
	// intercept, if set, sees each request first and answers it by
	// returning true.
	intercept func(w http.ResponseWriter, r *http.Request) bool

	discoveryHits, jwksHits atomic.Int64
}

func newTestIssuer(t *testing.T, keys ...jose.JSONWebKey) *testIssuer {
	t.Helper()
	is := &testIssuer{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.discoveryHits.Add(1)
		is.mu.Lock()
		down, iss, jwksURI := is.down, is.discoveryIssuer, is.jwksURI
		is.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if iss == "" {
			iss = is.URL()
		}
		if jwksURI == "" {
			jwksURI = is.URL() + "/jwks"
		}
		writeJSON(w, map[string]any{"issuer": iss, "jwks_uri": jwksURI, "id_token_signing_alg_values_supported": []string{"RS256", "ES256"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		is.jwksHits.Add(1)
		is.mu.Lock()
		down, set := is.down, jose.JSONWebKeySet{Keys: is.keys}
		is.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, set)
	})
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		intercept := is.intercept
		is.mu.Unlock()
		if intercept != nil && intercept(w, r) {
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (is *testIssuer) URL() string { return is.srv.URL }

func (is *testIssuer) setKeys(keys ...jose.JSONWebKey) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = keys
}

func (is *testIssuer) setIntercept(f func(w http.ResponseWriter, r *http.Request) bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.intercept = f
}

func (is *testIssuer) setDown(down bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.down = down
}

// newTestVerifier returns a Verifier for is's tokens on clock clk.
func newTestVerifier(t *testing.T, is *testIssuer, clk *cwapitest.Clock, o VerifierOptions) *Verifier {
	t.Helper()
	o.HTTPClient = is.srv.Client()
	o.Now = clk.Now
	v, err := NewVerifier(Policy{Issuers: []string{is.URL()}, Audience: testAudience, Leeway: DefaultLeeway}, o)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// waitFetches waits for any fetch v has running, so a test can count hits
// after a background refresh.
func waitFetches(v *Verifier) {
	for _, s := range v.sources {
		s.mu.Lock()
		done := s.inflight
		s.mu.Unlock()
		if done != nil {
			<-done
		}
	}
}

// wantRefusal fails unless err is an *Error with Reason want whose text
// holds none of raw's segments.
func wantRefusal(t *testing.T, err error, want Reason, raw string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want an *Error with reason %q", err, err, want)
	}
	if e.Reason != want {
		t.Errorf("reason = %q (%v), want %q", e.Reason, err, want)
	}
	if ReasonOf(err) != want {
		t.Errorf("ReasonOf = %q, want %q", ReasonOf(err), want)
	}
	wantNoLeak(t, err, raw)
	return e
}

// wantNoLeak fails if err's text contains raw, or its signature or claims
// segment.
func wantNoLeak(t testing.TB, err error, raw string) {
	t.Helper()
	msg := err.Error()
	if raw != "" && strings.Contains(msg, raw) {
		t.Errorf("error text contains the token: %s", msg)
	}
	segs := strings.Split(raw, ".")
	for i, s := range segs {
		if i == 0 || len(s) < 16 {
			continue // the header is public; short segments match by chance
		}
		if strings.Contains(msg, s) {
			t.Errorf("error text contains segment %d of the token: %s", i, msg)
		}
	}
}
