package cwapitest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// rawJWT builds an unsigned token from literal header and payload JSON.
func rawJWT(header, payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(payload)) + "." + enc([]byte("sig"))
}

// wantTokens checks that both OIDC endpoints accept or refuse each token.
func wantTokens(t *testing.T, e *env, tests []tokenCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			post := e.do("POST", pathOIDC, "", oidcBody(testOrg, tc.token, 60))
			get := reply{status: 401} // an empty token is a missing header
			if tc.token != "" {
				get = e.do("GET", pathOIDC+"/"+testOrg, tc.token, "")
			}
			if tc.ok {
				if post.status != http.StatusOK || get.status != http.StatusOK {
					t.Fatalf("POST = %d %s, GET = %d %s; want both 200", post.status, post.raw, get.status, get.raw)
				}
				return
			}
			if tc.token == "" {
				wantError(t, post, 400, 3, "oidcToken required")
				return
			}
			wantError(t, post, 400, 3, "Invalid token")
			wantError(t, get, 400, 3, "Invalid token")
			if strings.Contains(post.raw+get.raw, tc.token) {
				t.Errorf("an error reply quotes the token")
			}
		})
	}
}

type tokenCase struct {
	name, token string
	ok          bool
}

func TestJWTValidation(t *testing.T) {
	e := newEnv(t)
	now := e.clk.Now().Unix()
	// signed signs literal claims with the issuer's current key of alg.
	signed := func(payload string) string { return e.iss.sign([]byte(payload), RS256) }
	claims := func(extra string) string {
		return fmt.Sprintf(`{"iss":%q,"sub":%q%s}`, testIss, testSub, extra)
	}
	valid := claims(fmt.Sprintf(`,"aud":%q,"exp":%d`, testAud, now+60))
	noSig := signed(valid)
	noSig = noSig[:strings.LastIndex(noSig, ".")+1]
	wantTokens(t, e, []tokenCase{
		{"valid", signed(valid), true},
		{"Token RS256", e.iss.Token(TokenSpec{Subject: testSub}), true},
		{"Token ES256", e.iss.Token(TokenSpec{Subject: testSub, Alg: ES256}), true},
		{"ES256 literal", e.iss.sign([]byte(valid), ES256), true},
		{"aud array", signed(claims(fmt.Sprintf(`,"aud":["other",%q],"exp":%d`, testAud, now+60))), true},
		{"fractional exp", signed(claims(fmt.Sprintf(`,"aud":%q,"exp":%d.9`, testAud, now))), true},
		{"nbf in the past", signed(claims(fmt.Sprintf(`,"aud":%q,"exp":%d,"nbf":%d`, testAud, now+60, now-60))), true},

		{"empty", "", false},
		{"unsigned", rawJWT(`{"alg":"RS256","kid":"rs256-1"}`, valid), false},
		{"padded segments", strings.Replace(signed(valid), ".", "=.", 1), false},
		{"two segments", strings.Join(strings.Split(signed(valid), ".")[:2], "."), false},
		{"four segments", signed(valid) + ".x", false},
		{"empty signature", noSig, false},
		{"not base64url", "a+b.c/d.e", false},
		{"header not JSON", rawJWT(`alg`, valid), false},
		{"header without alg", rawJWT(`{"typ":"JWT"}`, valid), false},
		{"payload not JSON", signed(`{"iss":`), false},
		{"payload an array", signed(`[1,2]`), false},
		{"missing iss", signed(fmt.Sprintf(`{"sub":"s","aud":%q,"exp":%d}`, testAud, now+60)), false},
		{"missing sub", signed(fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":%d}`, testIss, testAud, now+60)), false},
		{"iss not a string", signed(fmt.Sprintf(`{"iss":1,"sub":"s","aud":%q,"exp":%d}`, testAud, now+60)), false},
		{"missing aud", signed(claims(fmt.Sprintf(`,"exp":%d`, now+60))), false},
		{"aud a number", signed(claims(fmt.Sprintf(`,"aud":1,"exp":%d`, now+60))), false},
		{"aud empty array", signed(claims(fmt.Sprintf(`,"aud":[],"exp":%d`, now+60))), false},
		{"wrong aud", e.iss.Token(TokenSpec{Audience: []string{"other"}}), false},
		{"missing exp", e.iss.Token(TokenSpec{Claims: map[string]any{"exp": nil}}), false},
		{"exp a string", signed(claims(fmt.Sprintf(`,"aud":%q,"exp":"%d"`, testAud, now+60))), false},
		{"expired", e.iss.Token(TokenSpec{TTL: -time.Second}), false},
		{"exp is now", signed(claims(fmt.Sprintf(`,"aud":%q,"exp":%d.5`, testAud, now))), false},
		{"nbf in the future", e.iss.Token(TokenSpec{NotBefore: e.clk.Now().Add(30 * time.Second)}), false},
		{"unknown issuer", e.iss.Token(TokenSpec{Claims: map[string]any{"iss": "https://evil.example"}}), false},
		{"issuer with trailing slash", e.iss.Token(TokenSpec{Claims: map[string]any{"iss": testIss + "/"}}), false},
	})

	// A token valid now expires as the clock moves on.
	tok := e.iss.Token(TokenSpec{Subject: testSub, TTL: time.Minute})
	e.mustOK("GET", pathOIDC+"/"+testOrg, tok, "")
	e.clk.Advance(time.Minute)
	wantError(t, e.do("GET", pathOIDC+"/"+testOrg, tok, ""), 400, 3, "Invalid token")
}

// TestJWTForgeries: tokens that name the trusted issuer but that it did not
// sign are refused by both endpoints, for both algorithms.
func TestJWTForgeries(t *testing.T) {
	e := newEnv(t)
	var tests []tokenCase
	for _, alg := range []string{RS256, ES256} {
		spec := TokenSpec{Subject: testSub, Alg: alg}
		tests = append(tests, tokenCase{alg + " genuine", e.iss.Token(spec), true})
		for name, f := range map[string]Forgery{
			"alg none": ForgeAlgNone, "HS256 keyed with the public key": ForgeHMACPublicKey,
			"foreign key, real kid": ForgeForeignKey, "unknown kid": ForgeUnknownKID, "tampered payload": ForgeTampered,
		} {
			tests = append(tests, tokenCase{alg + " " + name, e.iss.Forge(spec, f), false})
		}
	}
	// A key of another trusted issuer does not verify this issuer's tokens.
	other, err := NewIssuer("https://other.example", IssuerOptions{Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.emu.AddOIDCIssuer(other.URL(), OIDCIssuer{OrgID: testOrg, Issuer: other})
	tests = append(tests,
		tokenCase{"other issuer's own token", other.Token(TokenSpec{}), true},
		tokenCase{"other issuer's key claiming this issuer", other.Token(TokenSpec{Claims: map[string]any{"iss": testIss}}), false},
		tokenCase{"registered in another organization", other.Token(TokenSpec{}), true})
	wantTokens(t, e, tests[:len(tests)-1])
	e.emu.AddOIDCIssuer(other.URL(), OIDCIssuer{OrgID: "cw-other", Issuer: other})
	tests[len(tests)-1].ok = false
	wantTokens(t, e, tests[len(tests)-1:])
}

// TestJWTRotation: after Rotate new tokens use the new keys; tokens of the
// old keys verify until Retire, and not after.
func TestJWTRotation(t *testing.T) {
	e := newEnv(t)
	oldRS := e.iss.Token(TokenSpec{Subject: testSub})
	oldES := e.iss.Token(TokenSpec{Subject: testSub, Alg: ES256})
	oldKIDs := []string{e.iss.CurrentKeyID(RS256), e.iss.CurrentKeyID(ES256)}
	prev, err := e.iss.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(prev, oldKIDs) {
		t.Errorf("Rotate() = %v, want the old kids %v", prev, oldKIDs)
	}
	if got := len(e.iss.KeySet().Keys); got != 4 {
		t.Errorf("JWKS after Rotate has %d keys, want 4", got)
	}
	newRS := e.iss.Token(TokenSpec{Subject: testSub})
	if kidOf(t, newRS) == kidOf(t, oldRS) {
		t.Errorf("a token after Rotate has the old kid %s", kidOf(t, newRS))
	}
	newES := e.iss.Token(TokenSpec{Subject: testSub, Alg: ES256})
	wantTokens(t, e, []tokenCase{{"old RS256", oldRS, true}, {"old ES256", oldES, true}, {"new RS256", newRS, true}, {"new ES256", newES, true}})

	if err := e.iss.Retire(e.iss.CurrentKeyID(RS256)); err == nil {
		t.Errorf("Retire(current key) succeeded")
	}
	if err := e.iss.Retire("no-such-kid"); err == nil {
		t.Errorf("Retire(unknown kid) succeeded")
	}
	for _, kid := range prev {
		if err := e.iss.Retire(kid); err != nil {
			t.Fatal(err)
		}
	}
	wantTokens(t, e, []tokenCase{{"old RS256", oldRS, false}, {"old ES256", oldES, false}, {"new RS256", newRS, true}, {"new ES256", newES, true}})
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, verifyAlgs)
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

func TestOIDCIssuerWithoutAudience(t *testing.T) {
	e := newEnv(t)
	iss, err := NewIssuer("https://any-aud.example", IssuerOptions{Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.emu.AddOIDCIssuer(iss.URL(), OIDCIssuer{OrgID: testOrg, Issuer: iss})
	body := e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, iss.Token(TokenSpec{Subject: "s", Audience: []string{"whatever"}}), 60))
	if body["principalName"] != "role/"+iss.URL()+":s" {
		t.Errorf("principalName = %v", body["principalName"])
	}
}

func TestSAMLRole(t *testing.T) {
	b64 := func(xml string) string { return base64.StdEncoding.EncodeToString([]byte(xml)) }
	attr := func(name, value string) string {
		return `<saml:Attribute Name="` + name + `"><saml:AttributeValue>` + value + `</saml:AttributeValue></saml:Attribute>`
	}
	assertion := func(attrs ...string) string {
		return `<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"><saml:AttributeStatement>` +
			strings.Join(attrs, "") + `</saml:AttributeStatement></saml:Assertion>`
	}
	unpadded := assertion(attr(SAMLRoleAttribute, "ab"))
	for len(unpadded)%3 == 0 {
		unpadded += " "
	}
	unpadded = strings.TrimRight(b64(unpadded), "=")
	wrapped := MakeSAMLResponse("ops", "bob")
	var lines []string
	for len(wrapped) > 64 {
		lines, wrapped = append(lines, wrapped[:64]), wrapped[64:]
	}
	wrapped = strings.Join(append(lines, wrapped), "\r\n")
	tests := []struct {
		name, in, role, err string
	}{
		{"MakeSAMLResponse", MakeSAMLResponse("researchers", "alice@example.com"), "researchers", ""},
		{"escaped role", MakeSAMLResponse("r&d <team>", "alice"), "r&d <team>", ""},
		{"line-wrapped base64", wrapped, "ops", ""},
		{"bare assertion", b64(assertion(attr(SAMLRoleAttribute, " admins "))), "admins", ""},
		{"first role value wins", b64(assertion(attr(SAMLPrincipalAttribute, "p"), attr(SAMLRoleAttribute, "one"), attr(SAMLRoleAttribute, "two"))), "one", ""},

		{"not base64", "!!!", "", "base64"},
		{"unpadded base64", unpadded, "", "base64"},
		{"not XML", b64("hello"), "", "no XML element"},
		{"malformed XML", b64(`<Response><Assertion>`), "", "well-formed"},
		{"wrong root", b64(`<Envelope>` + assertion(attr(SAMLRoleAttribute, "x")) + `</Envelope>`), "", "root element"},
		{"two roots", b64(assertion(attr(SAMLRoleAttribute, "x")) + assertion()), "", "more than one root"},
		{"no role attribute", b64(assertion(attr(SAMLPrincipalAttribute, "alice"))), "", SAMLRoleAttribute},
		{"empty role", b64(assertion(attr(SAMLRoleAttribute, "  "))), "", SAMLRoleAttribute},
		{"role too long", b64(assertion(attr(SAMLRoleAttribute, strings.Repeat("r", maxRoleLen+1)))), "", "too long"},
		{"undefined entity", b64(assertion(attr(SAMLRoleAttribute, "&bomb;"))), "", "well-formed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			role, err := samlRole(tc.in)
			if tc.err == "" {
				if err != nil || role != tc.role {
					t.Errorf("samlRole = %q, %v; want %q", role, err, tc.role)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("samlRole = %q, %v; want an error containing %q", role, err, tc.err)
			}
		})
	}

	// Through the endpoint: a bad response is 400/3 and names the problem.
	e := newEnv(t)
	r := e.do("POST", pathSAML, "", samlBody(testOrg, testSAMLConfig, b64(assertion()), 60))
	wantError(t, r, 400, 3, "invalid SAML response")
	body := e.mustOK("POST", pathSAML, "", samlBody(testOrg, testSAMLConfig, wrapped, 0))
	if body["principalName"] != "saml/ops" || body["expiry"] != "2026-07-14T12:15:00Z" {
		t.Errorf("SAML mint = %v, want saml/ops with the default 900 s", body)
	}
}

func TestAttributeValidation(t *testing.T) {
	many := map[string]string{}
	for i := range maxAttributes + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	fifteen := map[string]string{}
	for i := range maxAttributes {
		fifteen[fmt.Sprintf("k%d", i)] = "v"
	}
	long := strings.Repeat("a", maxAttrLen)
	tests := []struct {
		name  string
		attrs map[string]string
		bad   string // the attribute the error must name; "" when valid
	}{
		{"none", nil, ""},
		{"typical", map[string]string{"cwcreds-node": "gpu-7", "profile": "Train_1.x"}, ""},
		{"empty value", map[string]string{"name": ""}, ""},
		{"max lengths", map[string]string{long: long}, ""},
		{"fifteen", fifteen, ""},
		{"sixteen", many, "at most 15"},
		{"upper-case key", map[string]string{"Name": "x"}, `"Name"`},
		{"key with underscore", map[string]string{"a_b": "x"}, `"a_b"`},
		{"key ends with dash", map[string]string{"ab-": "x"}, `"ab-"`},
		{"empty key", map[string]string{"": "x"}, `""`},
		{"key too long", map[string]string{long + "a": "x"}, `"aaaa`},
		{"reserved cw-", map[string]string{"cw-team": "x"}, `"cw-team"`},
		{"reserved role", map[string]string{"roles": "x"}, `"roles"`},
		{"reserved groups", map[string]string{"groups": "x"}, `"groups"`},
		{"value with space", map[string]string{"ok": "a b"}, `"ok"`},
		{"value starts with dot", map[string]string{"ok": ".a"}, `"ok"`},
		{"value too long", map[string]string{"ok": long + "a"}, `"ok"`},
		{"first bad key in order", map[string]string{"zz": "x y", "aa": "x y"}, `"aa"`},
	}
	e := newEnv(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			aerr := validateAttributes(tc.attrs)
			if tc.bad == "" {
				if aerr != nil {
					t.Errorf("validateAttributes(%v) = %v, want nil", tc.attrs, aerr)
				}
				return
			}
			if aerr == nil || aerr.code != CodeInvalidArgument || !strings.Contains(aerr.msg, tc.bad) {
				t.Fatalf("validateAttributes(%v) = %v, want INVALID_ARGUMENT naming %s", tc.attrs, aerr, tc.bad)
			}
		})
	}
	// Every POST mint applies the rules.
	bad := `"attributes":{"cw-x":"y"}`
	jwt := validJWT(e)
	saml := MakeSAMLResponse("r", "p")
	for path, body := range map[string]string{
		pathAccessKey: `{"durationSeconds":60,` + bad + `}`,
		pathOIDC:      fmt.Sprintf(`{"orgId":%q,"oidcToken":%q,%s}`, testOrg, jwt, bad),
		pathSAML:      fmt.Sprintf(`{"orgId":%q,"configId":%q,"samlResponse":%q,%s}`, testOrg, testSAMLConfig, saml, bad),
	} {
		wantError(t, e.do("POST", path, bearer(testToken), body), 400, 3, `"cw-x"`)
	}
}
