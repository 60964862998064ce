package cwapitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// getDoc fetches url and decodes its JSON into v, failing unless it is 200
// application/json.
func getDoc(t *testing.T, client *http.Client, url string, v any) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s = %d %q %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// decodeToken returns a token's protected header and claims, unverified.
func decodeToken(t *testing.T, tok string) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	var hdr, claims map[string]any
	for i, v := range []*map[string]any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return hdr, claims
}

// TestIssuerDocuments: the discovery document and JWKS have the shape a
// verifier (go-jose, as the daemon uses it) needs, and verify the tokens.
func TestIssuerDocuments(t *testing.T) {
	iss, ts, err := NewIssuerServer(IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if iss.URL() != ts.URL || iss.JWKSURL() != ts.URL+JWKSPath {
		t.Errorf("URL() = %s, JWKSURL() = %s, server at %s", iss.URL(), iss.JWKSURL(), ts.URL)
	}

	var disc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
		Resp    []string `json:"response_types_supported"`
		Subject []string `json:"subject_types_supported"`
	}
	getDoc(t, ts.Client(), ts.URL+DiscoveryPath, &disc)
	if disc.Issuer != iss.URL() || disc.JWKSURI != iss.JWKSURL() || !slices.Equal(disc.Algs, []string{RS256, ES256}) ||
		len(disc.Resp) == 0 || len(disc.Subject) == 0 {
		t.Errorf("discovery document = %+v", disc)
	}

	var set jose.JSONWebKeySet
	getDoc(t, ts.Client(), disc.JWKSURI, &set)
	if len(set.Keys) != 2 {
		t.Fatalf("JWKS has %d keys, want 2", len(set.Keys))
	}
	for _, k := range set.Keys {
		if !k.IsPublic() || !k.Valid() || k.Use != "sig" || k.KeyID == "" {
			t.Errorf("key %s: public %v valid %v use %q", k.KeyID, k.IsPublic(), k.Valid(), k.Use)
		}
		tp, _ := k.Thumbprint(crypto.SHA256)
		if k.KeyID != base64.RawURLEncoding.EncodeToString(tp) {
			t.Errorf("kid %s is not the key's RFC 7638 thumbprint", k.KeyID)
		}
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			if k.Algorithm != RS256 || pub.N.BitLen() != 2048 {
				t.Errorf("RSA key: alg %s, %d bits", k.Algorithm, pub.N.BitLen())
			}
		case *ecdsa.PublicKey:
			if k.Algorithm != ES256 || pub.Curve != elliptic.P256() {
				t.Errorf("EC key: alg %s, curve %v", k.Algorithm, pub.Curve.Params().Name)
			}
		default:
			t.Errorf("key %s is a %T", k.KeyID, k.Key)
		}
	}
	for _, alg := range []string{RS256, ES256} {
		tok := iss.Token(TokenSpec{Alg: alg})
		jws, err := jose.ParseSignedCompact(tok, verifyAlgs)
		if err != nil {
			t.Fatal(err)
		}
		h := jws.Signatures[0].Header
		keys := set.Key(h.KeyID)
		if h.Algorithm != alg || len(keys) != 1 || h.KeyID != iss.CurrentKeyID(alg) {
			t.Fatalf("%s token: header alg %s kid %s; %d JWKS keys of that kid", alg, h.Algorithm, h.KeyID, len(keys))
		}
		if _, err := jws.Verify(keys[0]); err != nil {
			t.Errorf("%s token does not verify with its JWKS key: %v", alg, err)
		}
	}

	if st := iss.Stats(); st != (IssuerStats{Discovery: 1, JWKS: 1}) {
		t.Errorf("Stats() = %+v, want one fetch of each", st)
	}
	for _, path := range []string{"/", "/jwks", DiscoveryPath + "x"} {
		if resp, err := ts.Client().Get(ts.URL + path); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %v %v, want 404", path, resp.StatusCode, err)
		}
	}
	if resp, err := ts.Client().Post(ts.URL+JWKSPath, "application/json", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST JWKS: %v %v, want 405", resp.StatusCode, err)
	}
	iss.ResetStats()
	if st := iss.Stats(); st != (IssuerStats{}) {
		t.Errorf("Stats() after ResetStats = %+v", st)
	}
}

// TestIssuerKubernetesClaims: tokens carry the claims of a projected
// service account token.
func TestIssuerKubernetesClaims(t *testing.T) {
	clk := NewClock(time.Date(2026, 7, 14, 12, 0, 0, 0, time.UTC))
	iss, err := NewIssuer("https://oidc.example.test/id/c1", IssuerOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	spec := TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "loader-0", Node: "gpu-7"}
	hdr, c := decodeToken(t, iss.Token(spec))
	if hdr["alg"] != RS256 || hdr["kid"] != iss.CurrentKeyID(RS256) || hdr["typ"] != nil {
		t.Errorf("header = %v, want alg RS256, the current kid and no typ (as Kubernetes)", hdr)
	}
	now := float64(clk.Now().Unix())
	if c["iss"] != iss.URL() || c["sub"] != "system:serviceaccount:ml:trainer" ||
		fmt.Sprint(c["aud"]) != "["+DefaultAudience+"]" ||
		c["iat"] != now || c["nbf"] != now || c["exp"] != now+3600 || !uuidRE.MatchString(fmt.Sprint(c["jti"])) {
		t.Errorf("standard claims = %v", c)
	}
	k8s, _ := c["kubernetes.io"].(map[string]any)
	ref := func(kind string) (string, string) {
		m, _ := k8s[kind].(map[string]any)
		return fmt.Sprint(m["name"]), fmt.Sprint(m["uid"])
	}
	saName, saUID := ref("serviceaccount")
	podName, podUID := ref("pod")
	nodeName, nodeUID := ref("node")
	if k8s["namespace"] != "ml" || saName != "trainer" || podName != "loader-0" || nodeName != "gpu-7" ||
		!uuidRE.MatchString(saUID) || !uuidRE.MatchString(podUID) || !uuidRE.MatchString(nodeUID) || len(k8s) != 4 {
		t.Errorf("kubernetes.io = %v", k8s)
	}

	// Same pod, same UIDs; another jti. A restarted pod has another UID.
	_, c2 := decodeToken(t, iss.Token(spec))
	k8s = c2["kubernetes.io"].(map[string]any)
	if _, uid := ref("pod"); uid != podUID || c2["jti"] == c["jti"] {
		t.Errorf("second token: pod uid %s (first %s), jti %v (first %v)", uid, podUID, c2["jti"], c["jti"])
	}
	spec.PodUID = "11111111-2222-4333-8444-555555555555"
	_, c3 := decodeToken(t, iss.Token(spec))
	k8s = c3["kubernetes.io"].(map[string]any)
	if _, uid := ref("pod"); uid != spec.PodUID {
		t.Errorf("PodUID override: pod uid %s", uid)
	}

	// Defaults, a plain subject, explicit times and extra claims.
	_, c = decodeToken(t, iss.Token(TokenSpec{}))
	k8s, _ = c["kubernetes.io"].(map[string]any)
	if c["sub"] != "system:serviceaccount:default:default" || k8s["namespace"] != "default" || k8s["pod"] != nil || k8s["node"] != nil {
		t.Errorf("zero TokenSpec: claims %v", c)
	}
	exp := clk.Now().Add(10 * time.Minute)
	_, c = decodeToken(t, iss.Token(TokenSpec{
		Subject: "repo:octo/app:ref:refs/heads/main", Audience: []string{"a", "b"}, Expiry: exp,
		Claims: map[string]any{"nbf": nil, "repository": "octo/app"},
	}))
	if c["sub"] != "repo:octo/app:ref:refs/heads/main" || c["kubernetes.io"] != nil || fmt.Sprint(c["aud"]) != "[a b]" ||
		c["exp"] != float64(exp.Unix()) || c["nbf"] != nil || c["repository"] != "octo/app" {
		t.Errorf("plain-subject token claims = %v", c)
	}
	if hdr, _ := decodeToken(t, iss.Token(TokenSpec{Alg: ES256})); hdr["alg"] != ES256 || hdr["kid"] != iss.CurrentKeyID(ES256) {
		t.Errorf("ES256 header = %v", hdr)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Errorf("Token with alg HS256 did not panic")
			}
		}()
		iss.Token(TokenSpec{Alg: "HS256"})
	}()
	if _, err := NewIssuer("not a url", IssuerOptions{}); err == nil {
		t.Errorf("NewIssuer accepted a relative URL")
	}
}

// TestStartIssuer: the emulator's own issuer is served at <base>/oidc,
// trusted, and read directly, so the emulator's verification fetches
// nothing.
func TestStartIssuer(t *testing.T) {
	e := newEnv(t)
	iss, err := e.emu.StartIssuer(e.ts.URL+"/", OIDCIssuer{OrgID: testOrg, Audience: testAud})
	if err != nil {
		t.Fatal(err)
	}
	if iss.URL() != e.ts.URL+IssuerPath || e.emu.Issuer() != iss {
		t.Fatalf("issuer %s, Issuer() = %p, want %s", iss.URL(), e.emu.Issuer(), e.ts.URL+IssuerPath)
	}
	var disc map[string]any
	getDoc(t, e.ts.Client(), iss.URL()+DiscoveryPath, &disc)
	var set jose.JSONWebKeySet
	getDoc(t, e.ts.Client(), fmt.Sprint(disc["jwks_uri"]), &set)
	if disc["issuer"] != iss.URL() || len(set.Keys) != 2 {
		t.Errorf("discovery %v, %d keys", disc, len(set.Keys))
	}
	iss.ResetStats()

	for _, alg := range []string{RS256, ES256} {
		tok := iss.Token(TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Alg: alg})
		body := e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, tok, 60))
		if body["principalName"] != "role/"+iss.URL()+":system:serviceaccount:ml:trainer" {
			t.Errorf("principalName = %v", body["principalName"])
		}
		e.mustOK("GET", pathOIDC+"/"+testOrg, tok, "")
		wantError(t, e.do("GET", pathOIDC+"/cw-other", tok, ""), 400, 3, "Invalid token")
	}
	if st := iss.Stats(); st != (IssuerStats{}) {
		t.Errorf("the emulator fetched its own issuer's documents: %+v", st)
	}
	if got := e.emu.Stats().Mints; got[EndpointOIDC] != 2 || got[EndpointContainer] != 2 {
		t.Errorf("mints = %v", got)
	}

	if _, err := e.emu.StartIssuer(e.ts.URL, OIDCIssuer{OrgID: testOrg}); err == nil {
		t.Errorf("a second StartIssuer succeeded")
	}
	for _, u := range []string{"https://x.example", "https://x.example/v1", "https://x.example/_emulator/i"} {
		other, err := NewIssuer(u, IssuerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.emu.ServeIssuer(other); err == nil {
			t.Errorf("ServeIssuer(%s) succeeded", u)
		}
	}
	// GET on the API paths is unaffected.
	wantError(t, e.do("GET", "/oidc/other", "", ""), 404, 5, "")
}

// TestFetchedIssuer: an issuer registered by discovery or JWKS URL is
// fetched once, cached, and fetched again for an unknown kid (so a rotated
// key is picked up) or when the cache is five minutes old (so a retired key
// stops verifying).
func TestFetchedIssuer(t *testing.T) {
	for _, byURL := range []bool{false, true} {
		t.Run(fmt.Sprintf("jwksUrl=%v", byURL), func(t *testing.T) {
			e := newEnv(t)
			iss, ts, err := NewIssuerServer(IssuerOptions{Now: e.clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer ts.Close()
			cfg := OIDCIssuer{OrgID: testOrg, Audience: testAud}
			disc := 1
			if byURL {
				cfg.JWKSURL, disc = iss.JWKSURL(), 0
			}
			e.emu.AddOIDCIssuer(iss.URL(), cfg)
			wantStats := func(d, j int) {
				t.Helper()
				if st := iss.Stats(); st != (IssuerStats{Discovery: d * disc, JWKS: j}) {
					t.Fatalf("issuer stats = %+v, want %d discovery and %d JWKS fetches", st, d*disc, j)
				}
			}
			post := func(tok string) reply {
				return e.do("POST", pathOIDC, "", oidcBody(testOrg, tok, 60))
			}

			oldRS, oldES := iss.Token(TokenSpec{}), iss.Token(TokenSpec{Alg: ES256})
			e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, oldRS, 60))
			wantStats(1, 1)
			e.mustOK("GET", pathOIDC+"/"+testOrg, oldES, "")
			wantStats(1, 1) // cached

			prev, err := iss.Rotate()
			if err != nil {
				t.Fatal(err)
			}
			e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, iss.Token(TokenSpec{}), 60))
			wantStats(2, 2) // unknown kid: fetched again
			e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, oldRS, 60))
			wantStats(2, 2)

			for _, kid := range prev {
				if err := iss.Retire(kid); err != nil {
					t.Fatal(err)
				}
			}
			e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, oldRS, 60)) // still cached
			e.clk.Advance(jwksCacheTTL)
			wantError(t, post(oldRS), 400, 3, "Invalid token")
			wantStats(3, 3)

			// A forged kid costs a fetch; a forged signature under a known
			// kid does not.
			wantError(t, post(iss.Forge(TokenSpec{}, ForgeUnknownKID)), 400, 3, "Invalid token")
			wantStats(4, 4)
			wantError(t, post(iss.Forge(TokenSpec{}, ForgeForeignKey)), 400, 3, "Invalid token")
			wantStats(4, 4)

			// An issuer that cannot be reached verifies nothing.
			ts.Close()
			e.clk.Advance(jwksCacheTTL)
			wantError(t, post(iss.Token(TokenSpec{})), 400, 3, "Invalid token")
		})
	}
}

// TestFetchedIssuerDiscoveryMismatch: a discovery document naming another
// issuer is not trusted.
func TestFetchedIssuerDiscoveryMismatch(t *testing.T) {
	e := newEnv(t)
	iss, ts, err := NewIssuerServer(IssuerOptions{Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	// The issuer registered as <server>/tenant is served by an issuer
	// whose discovery document says <server>.
	e.emu.AddOIDCIssuer(iss.URL()+"/tenant", OIDCIssuer{OrgID: testOrg, JWKSURL: ""})
	tok := iss.Token(TokenSpec{Claims: map[string]any{"iss": iss.URL() + "/tenant"}})
	wantError(t, e.do("POST", pathOIDC, "", oidcBody(testOrg, tok, 60)), 400, 3, "Invalid token")
}

// TestIssuerControls: the oidc controls drive the emulator's own issuer.
func TestIssuerControls(t *testing.T) {
	e := newEnv(t)
	ctl := func(method, path, body string) map[string]any {
		t.Helper()
		return e.mustOK(method, "/_emulator"+path, "", body)
	}
	for _, path := range []string{"/oidc-tokens", "/oidc-rotate", "/oidc-retire"} {
		wantError(t, e.do("POST", "/_emulator"+path, "", `{}`), 404, 5, "no OIDC issuer")
	}
	wantError(t, e.do("GET", "/_emulator/oidc-issuer", "", ""), 404, 5, "no OIDC issuer")

	iss, err := e.emu.StartIssuer(e.ts.URL, OIDCIssuer{OrgID: testOrg, Audience: testAud})
	if err != nil {
		t.Fatal(err)
	}
	token := func(body string) string {
		t.Helper()
		return fmt.Sprint(ctl("POST", "/oidc-tokens", body)["token"])
	}
	ok := func(tok string) bool {
		return e.do("GET", pathOIDC+"/"+testOrg, tok, "").status == http.StatusOK
	}

	tok := token(`{"namespace":"ml","serviceAccount":"trainer","pod":"p-0","node":"n-1","ttlSeconds":600,"alg":"ES256","audience":"https://coreweave.com/iam"}`)
	hdr, c := decodeToken(t, tok)
	k8s, _ := c["kubernetes.io"].(map[string]any)
	if !ok(tok) || hdr["alg"] != ES256 || c["sub"] != "system:serviceaccount:ml:trainer" || k8s["pod"] == nil || k8s["node"] == nil ||
		c["exp"].(float64)-c["iat"].(float64) != 600 {
		t.Errorf("token: header %v claims %v", hdr, c)
	}
	if tok := token(`{}`); !ok(tok) {
		t.Errorf("default token refused")
	}
	if tok := token(`{"subject":"ci","audience":["x","https://coreweave.com/iam"],"claims":{"repo":"a/b"}}`); !ok(tok) {
		t.Errorf("subject token refused")
	}
	for _, body := range []string{
		`{"ttlSeconds":-1}`, `{"audience":"other"}`, `{"claims":{"iss":"https://evil.example"}}`,
		`{"forge":"alg-none"}`, `{"forge":"hmac-public-key"}`, `{"forge":"foreign-key"}`,
		`{"forge":"unknown-kid","alg":"ES256"}`, `{"forge":"tampered"}`,
	} {
		if ok(token(body)) {
			t.Errorf("token from %s accepted", body)
		}
	}
	for _, body := range []string{`{"alg":"HS256"}`, `{"forge":"nope"}`, `{"audience":1}`, `{"ttl":"1h"}`, `{"ttlSeconds":1e12}`} {
		wantError(t, e.do("POST", "/_emulator/oidc-tokens", "", body), 400, 3, "")
	}

	info := ctl("GET", "/oidc-issuer", "")
	if info["issuer"] != iss.URL() || info["jwksUri"] != iss.JWKSURL() || info["discoveryUrl"] != iss.URL()+DiscoveryPath ||
		len(info["keys"].([]any)) != 2 {
		t.Errorf("oidc-issuer = %v", info)
	}
	old := token(`{}`)
	rot := ctl("POST", "/oidc-rotate", "")
	cur, prev := rot["current"].([]any), rot["previous"].([]any)
	if len(cur) != 2 || len(prev) != 2 || cur[0] != iss.CurrentKeyID(RS256) || cur[1] != iss.CurrentKeyID(ES256) {
		t.Fatalf("oidc-rotate = %v", rot)
	}
	if hdr, _ := decodeToken(t, token(`{}`)); hdr["kid"] != cur[0] {
		t.Errorf("token after rotate has kid %v, want %v", hdr["kid"], cur[0])
	}
	if !ok(old) {
		t.Errorf("token of a rotated-out key refused before retirement")
	}
	wantError(t, e.do("POST", "/_emulator/oidc-retire", "", fmt.Sprintf(`{"kid":%q}`, cur[0])), 400, 3, "current")
	for _, kid := range prev {
		ctl("POST", "/oidc-retire", fmt.Sprintf(`{"kid":%q}`, kid))
	}
	if ok(old) {
		t.Errorf("token of a retired key accepted")
	}
	if n := len(ctl("GET", "/oidc-issuer", "")["keys"].([]any)); n != 2 {
		t.Errorf("%d keys published after retiring the old ones, want 2", n)
	}

	// A fetch through the emulator's server counts; reset-stats zeroes it.
	var set jose.JSONWebKeySet
	getDoc(t, e.ts.Client(), iss.JWKSURL(), &set)
	if st := ctl("GET", "/oidc-issuer", "")["stats"].(map[string]any); st["jwks"] != 1.0 || st["discovery"] != 0.0 {
		t.Errorf("stats = %v", st)
	}
	ctl("POST", "/reset-stats", "")
	if st := iss.Stats(); st != (IssuerStats{}) {
		t.Errorf("stats after reset-stats = %+v", st)
	}

	// Registering the own issuer by URL, without keys, trusts its keys
	// directly, here for another organization.
	ctl("POST", "/oidc-issuers", fmt.Sprintf(`{"issuer":%q,"orgId":"cw-two"}`, iss.URL()))
	e.mustOK("GET", pathOIDC+"/cw-two", token(`{}`), "")
	if st := iss.Stats(); st != (IssuerStats{}) {
		t.Errorf("stats = %+v: the emulator fetched its own issuer's keys", st)
	}
}
