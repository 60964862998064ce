package cwapitest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawJWT builds a token from literal header and payload JSON.
func rawJWT(header, payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(payload)) + "." + enc([]byte("sig"))
}

func TestJWTValidation(t *testing.T) {
	e := newEnv(t)
	now := e.clk.Now().Unix()
	hdr := `{"alg":"RS256","typ":"JWT"}`
	claims := func(extra string) string {
		return fmt.Sprintf(`{"iss":%q,"sub":%q%s}`, testIss, testSub, extra)
	}
	valid := claims(fmt.Sprintf(`,"aud":%q,"exp":%d`, testAud, now+60))
	tests := []struct {
		name, token string
		ok          bool
	}{
		{"valid", rawJWT(hdr, valid), true},
		{"MakeJWT", MakeJWT(testIss, testSub, testAud, e.clk.Now().Add(time.Minute)), true},
		{"aud array", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":["other",%q],"exp":%d`, testAud, now+60))), true},
		{"fractional exp", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":%q,"exp":%d.9`, testAud, now))), true},
		{"nbf in the past", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":%q,"exp":%d,"nbf":%d`, testAud, now+60, now-60))), true},
		{"padded segments", strings.Replace(rawJWT(hdr, valid), ".", "=.", 1), true},

		{"empty", "", false},
		{"two segments", strings.Join(strings.Split(rawJWT(hdr, valid), ".")[:2], "."), false},
		{"four segments", rawJWT(hdr, valid) + ".x", false},
		{"empty signature", strings.TrimSuffix(rawJWT(hdr, valid), base64.RawURLEncoding.EncodeToString([]byte("sig"))), false},
		{"not base64url", "a+b.c/d.e", false},
		{"header not JSON", rawJWT(`alg`, valid), false},
		{"header without alg", rawJWT(`{"typ":"JWT"}`, valid), false},
		{"alg none", rawJWT(`{"alg":"none"}`, valid), false},
		{"payload not JSON", rawJWT(hdr, `{"iss":`), false},
		{"payload an array", rawJWT(hdr, `[1,2]`), false},
		{"missing iss", rawJWT(hdr, fmt.Sprintf(`{"sub":"s","aud":%q,"exp":%d}`, testAud, now+60)), false},
		{"missing sub", rawJWT(hdr, fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":%d}`, testIss, testAud, now+60)), false},
		{"iss not a string", rawJWT(hdr, fmt.Sprintf(`{"iss":1,"sub":"s","aud":%q,"exp":%d}`, testAud, now+60)), false},
		{"missing aud", rawJWT(hdr, claims(fmt.Sprintf(`,"exp":%d`, now+60))), false},
		{"aud a number", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":1,"exp":%d`, now+60))), false},
		{"aud empty array", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":[],"exp":%d`, now+60))), false},
		{"wrong aud", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":"other","exp":%d`, now+60))), false},
		{"missing exp", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":%q`, testAud))), false},
		{"exp a string", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":%q,"exp":"%d"`, testAud, now+60))), false},
		{"expired", MakeJWT(testIss, testSub, testAud, e.clk.Now().Add(-time.Second)), false},
		{"exp is now", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":%q,"exp":%d.5`, testAud, now))), false},
		{"nbf in the future", rawJWT(hdr, claims(fmt.Sprintf(`,"aud":%q,"exp":%d,"nbf":%d`, testAud, now+60, now+30))), false},
		{"unknown issuer", MakeJWT("https://evil.example", testSub, testAud, e.clk.Now().Add(time.Minute)), false},
		{"issuer with trailing slash", MakeJWT(testIss+"/", testSub, testAud, e.clk.Now().Add(time.Minute)), false},
	}
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
		})
	}

	// A token valid now expires as the clock moves on.
	tok := MakeJWT(testIss, testSub, testAud, e.clk.Now().Add(time.Minute))
	e.mustOK("GET", pathOIDC+"/"+testOrg, tok, "")
	e.clk.Advance(time.Minute)
	wantError(t, e.do("GET", pathOIDC+"/"+testOrg, tok, ""), 400, 3, "Invalid token")
}

func TestOIDCIssuerWithoutAudience(t *testing.T) {
	e := newEnv(t)
	const iss = "https://any-aud.example"
	e.emu.AddOIDCIssuer(iss, OIDCIssuer{OrgID: testOrg})
	body := e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, MakeJWT(iss, "s", "whatever", e.clk.Now().Add(time.Hour)), 60))
	if body["principalName"] != "role/"+iss+":s" {
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

func TestMakeJWT(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tok := MakeJWT("https://iss", "sub\"quoted", "aud", exp)
	c, err := parseJWT(tok, exp.Add(-time.Second))
	if err != nil {
		t.Fatalf("parseJWT(MakeJWT(...)) = %v", err)
	}
	if c.iss != "https://iss" || c.sub != "sub\"quoted" || len(c.aud) != 1 || c.aud[0] != "aud" {
		t.Errorf("claims = %+v", c)
	}
	if _, err := parseJWT(tok, exp); err == nil {
		t.Errorf("token accepted at its exp")
	}
}
