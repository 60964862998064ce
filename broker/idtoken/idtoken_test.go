package idtoken

import (
	"crypto/x509"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// projectedPayload is the claims of a Kubernetes projected service-account
// token (audience set to CoreWeave's), in the shape the API server issues
// (kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/,
// Kubernetes 1.30+ with the node claim).
const projectedPayload = `{
  "aud": ["https://coreweave.com/iam"],
  "exp": 1796572800,
  "iat": 1796569200,
  "iss": "https://oidc.cks.coreweave.com/id/8f3d2c1b",
  "jti": "ea28ed49-2e11-4280-9ec5-bc3d1d84661a",
  "kubernetes.io": {
    "namespace": "training",
    "node": {"name": "g7f3a1-gpu-node-12", "uid": "58456cb0-dd00-45ed-b797-5578fdceaced"},
    "pod": {"name": "dataloader-69cbfb9798-jv9gn", "uid": "778a530c-b3f4-47c0-9cd5-ab018fb64f33"},
    "serviceaccount": {"name": "dataloader", "uid": "a087d5a0-e1dd-43ec-93ac-f13d89cd13af"},
    "warnafter": 1796572020
  },
  "nbf": 1796569200,
  "sub": "system:serviceaccount:training:dataloader"
}`

func TestParseProjectedToken(t *testing.T) {
	raw := sign(t, jose.RS256, keys().rsa1, "OAjVVaejWFc0Yt9ykr0_8lMMuRNs67OXTWHsN02Pkyw", projectedPayload)
	c, err := Parse(raw)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Claims{
		Issuer:            "https://oidc.cks.coreweave.com/id/8f3d2c1b",
		Subject:           "system:serviceaccount:training:dataloader",
		Audience:          []string{"https://coreweave.com/iam"},
		Expiry:            time.Unix(1796572800, 0).UTC(),
		NotBefore:         time.Unix(1796569200, 0).UTC(),
		IssuedAt:          time.Unix(1796569200, 0).UTC(),
		Namespace:         "training",
		ServiceAccount:    "dataloader",
		ServiceAccountUID: "a087d5a0-e1dd-43ec-93ac-f13d89cd13af",
		Pod:               "dataloader-69cbfb9798-jv9gn",
		PodUID:            "778a530c-b3f4-47c0-9cd5-ab018fb64f33",
		Node:              "g7f3a1-gpu-node-12",
		Algorithm:         "RS256",
		KeyID:             "OAjVVaejWFc0Yt9ykr0_8lMMuRNs67OXTWHsN02Pkyw",
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", *c, want)
	}
}

func TestParseClaimForms(t *testing.T) {
	k := keys()
	base := map[string]any{"iss": "https://issuer.example", "sub": "s", "exp": 1796572800}
	tests := []struct {
		name   string
		claims any
		check  func(*Claims) bool
	}{
		{"aud string", with(base, "aud", "a1"), func(c *Claims) bool { return slices.Equal(c.Audience, []string{"a1"}) }},
		{"aud array", with(base, "aud", []string{"a1", "a2"}), func(c *Claims) bool { return slices.Equal(c.Audience, []string{"a1", "a2"}) }},
		{"aud absent", base, func(c *Claims) bool { return c.Audience == nil }},
		{"aud null", `{"iss":"i","sub":"s","exp":1796572800,"aud":null}`, func(c *Claims) bool { return c.Audience == nil }},
		{"exp fraction", `{"iss":"i","sub":"s","exp":1796572800.5}`, func(c *Claims) bool {
			return c.Expiry.Equal(time.Unix(1796572800, 500_000_000))
		}},
		{"nbf iat absent", base, func(c *Claims) bool { return c.NotBefore.IsZero() && c.IssuedAt.IsZero() }},
		{"no kubernetes claims", base, func(c *Claims) bool {
			return c.Namespace == "" && c.Pod == "" && c.ServiceAccount == "" && c.Node == ""
		}},
		{"kubernetes without pod", `{"iss":"i","sub":"s","exp":1796572800,"kubernetes.io":{"namespace":"n","serviceaccount":{"name":"sa"}}}`,
			func(c *Claims) bool {
				return c.Namespace == "n" && c.ServiceAccount == "sa" && c.Pod == "" && c.Node == ""
			}},
		{"no kid", base, func(c *Claims) bool { return c.KeyID == "" && c.Algorithm == "ES256" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := sign(t, jose.ES256, k.ec1, "", tt.claims)
			c, err := Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !tt.check(c) {
				t.Errorf("Parse = %+v", *c)
			}
		})
	}
}

func TestParseRefusals(t *testing.T) {
	k := keys()
	valid := sign(t, jose.RS256, k.rsa1, "r1", claimsFor("https://issuer.example", time.Now()))
	h, p, s := splitToken(valid)
	rsaDER, err := x509.MarshalPKIXPublicKey(&k.rsa1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	good := `{"iss":"i","sub":"s","exp":1796572800}`
	rs := `{"alg":"RS256","kid":"r1"}`
	sig := b64("not really a signature but long enough")
	tests := []struct {
		name string
		raw  string
		want Reason
	}{
		{"empty", "", ReasonMalformed},
		{"one segment", "abc", ReasonMalformed},
		{"two segments", h + "." + p, ReasonMalformed},
		{"four segments", valid + ".x", ReasonMalformed},
		{"JWE five segments", h + ".." + p + "." + s + ".tag", ReasonMalformed},
		{"oversize", h + "." + strings.Repeat("A", MaxTokenBytes) + "." + s, ReasonMalformed},
		{"bad base64 header", "!!!." + p + "." + s, ReasonMalformed},
		{"bad base64 claims", h + ".%%%." + s, ReasonMalformed},
		{"bad base64 signature", h + "." + p + ".$$$", ReasonMalformed},
		{"padded base64 signature", h + "." + p + "." + s + "==", ReasonMalformed},
		{"empty signature", unsigned(rs, good, ""), ReasonMalformed},
		{"header not JSON", unsigned("hello", good, sig), ReasonMalformed},
		{"header JSON array", unsigned(`["RS256"]`, good, sig), ReasonMalformed},
		{"header null", unsigned(`null`, good, sig), ReasonMalformed},
		{"header no alg", unsigned(`{"kid":"r1"}`, good, sig), ReasonMalformed},
		{"header alg number", unsigned(`{"alg":256}`, good, sig), ReasonMalformed},
		{"header crit", unsigned(`{"alg":"RS256","crit":["exp"],"exp":1}`, good, sig), ReasonMalformed},
		{"claims not JSON", unsigned(rs, "hello", sig), ReasonMalformed},
		{"claims JSON array", unsigned(rs, `[{"iss":"i"}]`, sig), ReasonMalformed},
		{"claims JSON string", unsigned(rs, `"iss"`, sig), ReasonMalformed},
		{"claims null", unsigned(rs, `null`, sig), ReasonMalformed},
		{"claims truncated", unsigned(rs, good[:20], sig), ReasonMalformed},
		{"missing exp", unsigned(rs, `{"iss":"i","sub":"s"}`, sig), ReasonMalformed},
		{"missing iss", unsigned(rs, `{"sub":"s","exp":1796572800}`, sig), ReasonMalformed},
		{"missing sub", unsigned(rs, `{"iss":"i","exp":1796572800}`, sig), ReasonMalformed},
		{"exp string", unsigned(rs, `{"iss":"i","sub":"s","exp":"1796572800"}`, sig), ReasonMalformed},
		{"exp negative", unsigned(rs, `{"iss":"i","sub":"s","exp":-1}`, sig), ReasonMalformed},
		{"exp huge", unsigned(rs, `{"iss":"i","sub":"s","exp":1e300}`, sig), ReasonMalformed},
		{"nbf bool", unsigned(rs, `{"iss":"i","sub":"s","exp":1796572800,"nbf":true}`, sig), ReasonMalformed},
		{"iss number", unsigned(rs, `{"iss":1,"sub":"s","exp":1796572800}`, sig), ReasonMalformed},
		{"aud number", unsigned(rs, `{"iss":"i","sub":"s","exp":1796572800,"aud":1}`, sig), ReasonMalformed},
		{"aud mixed array", unsigned(rs, `{"iss":"i","sub":"s","exp":1796572800,"aud":["a",1]}`, sig), ReasonMalformed},
		{"iss null", unsigned(rs, `{"iss":null,"sub":"s","exp":1796572800}`, sig), ReasonMalformed},
		{"exp null", unsigned(rs, `{"iss":"i","sub":"s","exp":null}`, sig), ReasonMalformed},
		{"kubernetes.io wrong shape", unsigned(rs, `{"iss":"i","sub":"s","exp":1796572800,"kubernetes.io":{"pod":"p"}}`, sig), ReasonMalformed},
		{"alg none", unsigned(`{"alg":"none"}`, good, ""), ReasonAlgorithm},
		{"alg none with signature", unsigned(`{"alg":"none"}`, good, sig), ReasonAlgorithm},
		{"alg None", unsigned(`{"alg":"None"}`, good, sig), ReasonAlgorithm},
		{"alg NONE", unsigned(`{"alg":"NONE"}`, good, sig), ReasonAlgorithm},
		{"alg hs512", unsigned(`{"alg":"hs512"}`, good, sig), ReasonAlgorithm},
		{"later duplicate alg none", unsigned(`{"alg":"RS256","alg":"none"}`, good, sig), ReasonAlgorithm},
		// Alg confusion: a token MACed with the issuer's public key as
		// the HMAC secret would verify if a verifier accepted HS256 for
		// an RSA key.
		{"HS256 with the RSA public key as secret", sign(t, jose.HS256, rsaDER, "r1", claimsFor("https://issuer.example", time.Now())), ReasonAlgorithm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.raw)
			if c != nil {
				t.Errorf("Parse returned claims %+v with error %v", *c, err)
			}
			wantRefusal(t, err, tt.want, tt.raw)
		})
	}
}

func splitToken(raw string) (h, p, s string) {
	parts := strings.SplitN(raw, ".", 3)
	return parts[0], parts[1], parts[2]
}

// reasons lists every Reason: the closed set callers map to statuses and
// metric labels.
func reasons() []Reason {
	return []Reason{
		ReasonMalformed, ReasonIssuer, ReasonAudience, ReasonExpired,
		ReasonNotYetValid, ReasonAlgorithm, ReasonSignature, ReasonKeys,
	}
}

func TestReasonsClosedSet(t *testing.T) {
	rs := reasons()
	if len(rs) != 8 {
		t.Errorf("reasons() has %d entries, want 8", len(rs))
	}
	seen := map[Reason]bool{}
	for _, r := range rs {
		if seen[r] || r == "" || strings.ContainsAny(string(r), " \"{}") {
			t.Errorf("bad or duplicate reason %q", r)
		}
		seen[r] = true
	}
}

func TestErrorText(t *testing.T) {
	long := strings.Repeat("x", 5000)
	raw := sign(t, jose.ES256, keys().ec1, "", map[string]any{"iss": long, "sub": "s", "exp": 1796572800, "aud": "a"})
	c, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	err = Policy{Issuers: []string{"https://good"}, Audience: "a"}.Check(c, time.Unix(1796570000, 0))
	e := wantRefusal(t, err, ReasonIssuer, raw)
	if len(e.Error()) > 200 {
		t.Errorf("error text is %d bytes, want the issuer truncated: %s", len(e.Error()), e)
	}
	if !strings.HasPrefix(e.Error(), "idtoken: issuer: iss \"xxx") {
		t.Errorf("Error() = %q", e.Error())
	}
	wrapped := errors.Join(errors.New("context"), err)
	if ReasonOf(wrapped) != ReasonIssuer {
		t.Errorf("ReasonOf(wrapped) = %q", ReasonOf(wrapped))
	}
	if ReasonOf(errors.New("other")) != "" || ReasonOf(nil) != "" {
		t.Error("ReasonOf of a foreign error is not empty")
	}
}

// FuzzParse: Parse never panics, every error is an *Error whose text holds
// no long piece of the input, and every success has the required claims.
func FuzzParse(f *testing.F) {
	k := keys()
	now := time.Unix(1796569200, 0)
	f.Add(sign(f, jose.RS256, k.rsa1, "r1", claimsFor("https://issuer.example", now)))
	f.Add(sign(f, jose.ES256, k.ec1, "", projectedPayload))
	f.Add(unsigned(`{"alg":"none"}`, `{"iss":"i","sub":"s","exp":1}`, ""))
	f.Add(unsigned(`{"alg":"RS256","crit":["b64"]}`, `{"iss":"i","sub":"s","exp":1,"aud":["a"]}`, "c2ln"))
	f.Add(unsigned(`{"alg":"RS256"}`, `{"iss":"i","sub":"s","exp":1e9,"nbf":1.5,"kubernetes.io":{"pod":{"name":"p"}}}`, "c2ln"))
	f.Add("")
	f.Add("..")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := Parse(raw)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned claims and error %v", err)
			}
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if !slices.Contains(reasons(), ReasonOf(err)) {
				t.Fatalf("reason %q is not in reasons()", ReasonOf(err))
			}
			// Details are fixed text plus values truncated to about
			// maxDetailValue bytes: a longer input never appears whole.
			if len(raw) > 3*maxDetailValue && strings.Contains(err.Error(), raw) {
				t.Fatalf("error text contains the input: %v", err)
			}
			return
		}
		if c == nil || c.Issuer == "" || c.Subject == "" || c.Expiry.IsZero() || c.Algorithm == "" {
			t.Fatalf("Parse succeeded with incomplete claims %+v", c)
		}
		if isHMAC(c.Algorithm) || strings.EqualFold(c.Algorithm, "none") {
			t.Fatalf("Parse accepted alg %q", c.Algorithm)
		}
	})
}

// BenchmarkParse parses a projected token of about 1 KB.
func BenchmarkParse(b *testing.B) {
	raw := sign(b, jose.RS256, keys().rsa1, "OAjVVaejWFc0Yt9ykr0_8lMMuRNs67OXTWHsN02Pkyw", projectedPayload)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}
