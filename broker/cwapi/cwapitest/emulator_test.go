package cwapitest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testToken      = "CW-SECRET-test-token"
	deniedToken    = "CW-SECRET-denied-token"
	otherOrgToken  = "CW-SECRET-other-org"
	testOrg        = "cw123"
	testIss        = "https://oidc.example.test/id/cluster"
	testAud        = "https://coreweave.com/iam"
	testSub        = "system:serviceaccount:ml:trainer"
	testSAMLConfig = "samlcfg"
)

var (
	keyIDRE  = regexp.MustCompile(`^CW[A-Z0-9]{14}$`)
	secretRE = regexp.MustCompile(`^cwo[a-z0-9]{40}$`)
)

// env is an emulator with the test identities, behind an httptest server.
// iss is the trusted OIDC issuer testIss: an in-process Issuer, not served
// over HTTP, whose keys the emulator reads directly.
type env struct {
	t   *testing.T
	emu *Emulator
	clk *Clock
	ts  *httptest.Server
	iss *Issuer
}

func newEnv(t *testing.T, opts ...func(*Options)) *env {
	t.Helper()
	// Half a second past the minute, to show expiries are truncated.
	clk := NewClock(time.Date(2026, 7, 14, 12, 0, 0, 5e8, time.UTC))
	o := Options{Now: clk.Now}
	for _, fn := range opts {
		fn(&o)
	}
	emu := New(o)
	emu.AddAPIToken(testToken, Identity{Principal: "coreweave/u1", OrgID: testOrg})
	emu.AddAPIToken(deniedToken, Identity{Principal: "coreweave/u2", OrgID: testOrg, Denied: true})
	emu.AddAPIToken(otherOrgToken, Identity{Principal: "coreweave/u3", OrgID: "cw999"})
	iss, err := NewIssuer(testIss, IssuerOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	emu.AddOIDCIssuer(testIss, OIDCIssuer{OrgID: testOrg, Audience: testAud, Issuer: iss})
	emu.AddSAMLConfig(testSAMLConfig, SAMLConfig{OrgID: testOrg})
	ts := httptest.NewServer(emu)
	t.Cleanup(ts.Close)
	return &env{t: t, emu: emu, clk: clk, ts: ts, iss: iss}
}

// reply is a response, with its body decoded if it is a JSON object.
type reply struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// do sends a request; auth, if not empty, is the Authorization header.
func (e *env) do(method, path, auth, body string) reply {
	e.t.Helper()
	r, err := e.try(method, path, auth, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// try is do for goroutines other than the test's: it returns the error.
func (e *env) try(method, path, auth, body string) (reply, error) {
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body) // left nil when not an object
	return r, nil
}

func (e *env) mustOK(method, path, auth, body string) map[string]any {
	e.t.Helper()
	r := e.do(method, path, auth, body)
	if r.status != http.StatusOK || r.body == nil {
		e.t.Fatalf("%s %s = %d %s, want 200 and a JSON object", method, path, r.status, r.raw)
	}
	return r.body
}

func bearer(tok string) string { return "Bearer " + tok }

func oidcBody(org, token string, secs int) string {
	return fmt.Sprintf(`{"orgId":%q,"oidcToken":%q,"durationSeconds":%d}`, org, token, secs)
}

func samlBody(org, config, resp string, secs int) string {
	return fmt.Sprintf(`{"orgId":%q,"configId":%q,"samlResponse":%q,"durationSeconds":%d}`, org, config, resp, secs)
}

// validJWT is a token of testIss for testSub, valid for an hour.
func validJWT(e *env) string {
	return e.iss.Token(TokenSpec{Namespace: "ml", ServiceAccount: "trainer"})
}

// wantFields fails unless m has exactly the given keys.
func wantFields(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	got := slices.Sorted(maps.Keys(m))
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("JSON keys = %v, want %v", got, keys)
	}
}

// wantError checks a google.rpc.Status error reply.
func wantError(t *testing.T, r reply, status, code int, msg string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status = %d, want %d (body %s)", r.status, status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	wantFields(t, r.body, "code", "message", "details")
	if got, _ := r.body["code"].(float64); int(got) != code {
		t.Errorf("code = %v, want %d", r.body["code"], code)
	}
	if d, ok := r.body["details"].([]any); !ok || len(d) != 0 {
		t.Errorf("details = %v, want []", r.body["details"])
	}
	if m, _ := r.body["message"].(string); !strings.Contains(m, msg) {
		t.Errorf("message = %q, want it to contain %q", m, msg)
	}
}

func TestMintSuccessShapes(t *testing.T) {
	camel := []string{"accessKeyId", "secretKey", "principalName", "expiry", "attributes"}
	pascal := []string{"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "attributes", "multiAttributes"}
	tests := []struct {
		name         string
		method, path string
		auth         func(*env) string
		body         func(*env) string
		endpoint     string
		fields       []string
		principal    string
		expiry       string
		attrs        map[string]string
	}{
		{
			name: "access-key temporary", method: "POST", path: pathAccessKey,
			auth: func(*env) string { return bearer(testToken) },
			body: func(*env) string {
				return `{"durationSeconds":3600,"attributes":{"name":"ci","empty":""},"unknownField":1}`
			},
			endpoint: EndpointAccessKey, fields: camel, principal: "coreweave/u1",
			expiry: "2026-07-14T13:00:00Z", attrs: map[string]string{"name": "ci", "empty": ""},
		},
		{
			name: "access-key permanent", method: "POST", path: pathAccessKey,
			auth:     func(*env) string { return bearer(testToken) },
			body:     func(*env) string { return `{"durationSeconds":0}` },
			endpoint: EndpointAccessKey, fields: camel, principal: "coreweave/u1",
			expiry: permanentStamp, attrs: map[string]string{},
		},
		{
			name: "access-key snake_case numeric string", method: "POST", path: pathAccessKey,
			auth:     func(*env) string { return bearer(testToken) },
			body:     func(*env) string { return `{"duration_seconds":"43200"}` },
			endpoint: EndpointAccessKey, fields: camel, principal: "coreweave/u1",
			expiry: "2026-07-15T00:00:00Z", attrs: map[string]string{},
		},
		{
			name: "api-token", method: "GET", path: pathAPIToken,
			auth:     func(*env) string { return bearer(testToken) },
			body:     func(*env) string { return "" },
			endpoint: EndpointAPIToken, fields: pascal, principal: "coreweave/u1",
			expiry: "2026-07-14T12:15:00Z", attrs: map[string]string{},
		},
		{
			name: "oidc default duration, Authorization ignored", method: "POST", path: pathOIDC,
			auth:     func(*env) string { return "Bearer garbage" },
			body:     func(e *env) string { return oidcBody(testOrg, validJWT(e), 0) },
			endpoint: EndpointOIDC, fields: camel, principal: "role/" + testIss + ":" + testSub,
			expiry: "2026-07-14T12:15:00Z", attrs: map[string]string{},
		},
		{
			name: "oidc explicit duration and attributes", method: "POST", path: pathOIDC,
			body: func(e *env) string {
				return fmt.Sprintf(`{"org_id":%q,"oidc_token":%q,"durationSeconds":7200,"attributes":{"node":"gpu-7"}}`, testOrg, validJWT(e))
			},
			endpoint: EndpointOIDC, fields: camel, principal: "role/" + testIss + ":" + testSub,
			expiry: "2026-07-14T14:00:00Z", attrs: map[string]string{"node": "gpu-7"},
		},
		{
			name: "container credentials", method: "GET", path: pathOIDC + "/" + testOrg,
			auth:     validJWT,
			body:     func(*env) string { return "" },
			endpoint: EndpointContainer, fields: pascal, principal: "role/" + testIss + ":" + testSub,
			expiry: "2026-07-14T12:15:00Z", attrs: map[string]string{},
		},
		{
			name: "saml", method: "POST", path: pathSAML,
			body: func(*env) string {
				return samlBody(testOrg, testSAMLConfig, MakeSAMLResponse("researchers", "alice@example.com"), 1800)
			},
			endpoint: EndpointSAML, fields: camel, principal: "saml/researchers",
			expiry: "2026-07-14T12:30:00Z", attrs: map[string]string{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			auth := ""
			if tc.auth != nil {
				auth = tc.auth(e)
			}
			r := e.do(tc.method, tc.path, auth, tc.body(e))
			if r.status != http.StatusOK {
				t.Fatalf("status = %d, body %s", r.status, r.raw)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			wantFields(t, r.body, tc.fields...)
			id, secret, exp := r.body["accessKeyId"], r.body["secretKey"], r.body["expiry"]
			if tc.fields[0] == "AccessKeyId" {
				id, secret, exp = r.body["AccessKeyId"], r.body["SecretAccessKey"], r.body["Expiration"]
				if r.body["Token"] != "" {
					t.Errorf("Token = %v, want \"\"", r.body["Token"])
				}
				if m, _ := r.body["multiAttributes"].(map[string]any); m == nil || len(m) != 0 {
					t.Errorf("multiAttributes = %v, want {}", r.body["multiAttributes"])
				}
			} else if r.body["principalName"] != tc.principal {
				t.Errorf("principalName = %v, want %s", r.body["principalName"], tc.principal)
			}
			idStr, _ := id.(string)
			if !keyIDRE.MatchString(idStr) {
				t.Errorf("access key id %v does not match %s", id, keyIDRE)
			}
			if s, _ := secret.(string); !secretRE.MatchString(s) {
				t.Errorf("secret %v does not match %s", secret, secretRE)
			}
			if exp != tc.expiry {
				t.Errorf("expiry = %v, want %s", exp, tc.expiry)
			}
			gotAttrs := map[string]string{}
			for k, v := range r.body["attributes"].(map[string]any) {
				gotAttrs[k], _ = v.(string)
			}
			if !maps.Equal(gotAttrs, tc.attrs) {
				t.Errorf("attributes = %v, want %v", gotAttrs, tc.attrs)
			}

			k, ok := e.emu.Key(idStr)
			if !ok {
				t.Fatalf("Key(%q) not found", idStr)
			}
			if k.SecretKey != secret || k.Principal != tc.principal || k.OrgID != testOrg ||
				k.Endpoint != tc.endpoint || k.Status != StatusActive || formatTime(k.Expiry) != tc.expiry {
				t.Errorf("Key(%q) = %+v, disagrees with the reply", idStr, k)
			}
			st := e.emu.Stats()
			if st.Requests[tc.endpoint] != 1 || st.Mints[tc.endpoint] != 1 || st.InFlight != 0 || st.MaxInFlight != 1 {
				t.Errorf("Stats() = %+v, want one request and one mint on %s", st, tc.endpoint)
			}
		})
	}
}

func TestMintErrors(t *testing.T) {
	e := newEnv(t)
	jwt := validJWT(e)
	saml := MakeSAMLResponse("researchers", "alice@example.com")
	tests := []struct {
		name, method, path, auth, body string
		status, code                   int
		msg                            string
	}{
		{"access-key no auth", "POST", pathAccessKey, "", `{"durationSeconds":60}`, 401, 16, "missing Authorization"},
		{"access-key no Bearer prefix", "POST", pathAccessKey, testToken, `{"durationSeconds":60}`, 401, 16, "Bearer"},
		{"access-key lower-case bearer", "POST", pathAccessKey, "bearer " + testToken, `{"durationSeconds":60}`, 401, 16, "Bearer"},
		{"access-key unknown token", "POST", pathAccessKey, bearer("CW-SECRET-nope"), `{"durationSeconds":60}`, 401, 16, "invalid API access token"},
		{"access-key empty token", "POST", pathAccessKey, "Bearer ", `{"durationSeconds":60}`, 401, 16, ""},
		{"access-key denied", "POST", pathAccessKey, bearer(deniedToken), `{"durationSeconds":60}`, 403, 7, "permission denied"},
		{"access-key duration omitted", "POST", pathAccessKey, bearer(testToken), `{"attributes":{}}`, 400, 3, "duration required"},
		{"access-key duration null", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":null}`, 400, 3, "duration required"},
		{"access-key empty body", "POST", pathAccessKey, bearer(testToken), ``, 400, 3, "duration required"},
		{"access-key duration too long", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":43201}`, 400, 3, "43200"},
		{"access-key duration negative", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":-1}`, 400, 3, "durationSeconds"},
		{"access-key duration fractional", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":1.5}`, 400, 3, "durationSeconds"},
		{"access-key duration not numeric", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":"soon"}`, 400, 3, "durationSeconds"},
		{"access-key duration overflows uint32", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":4294967296}`, 400, 3, "durationSeconds"},
		{"access-key bad JSON", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":`, 400, 3, "JSON"},
		{"access-key JSON array", "POST", pathAccessKey, bearer(testToken), `[1]`, 400, 3, "JSON"},
		{"access-key attributes not strings", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":60,"attributes":{"a":1}}`, 400, 3, "attributes"},
		{"access-key bad attribute", "POST", pathAccessKey, bearer(testToken), `{"durationSeconds":60,"attributes":{"Bad":"x"}}`, 400, 3, `"Bad"`},
		{"access-key body too large", "POST", pathAccessKey, bearer(testToken), `{"pad":"` + strings.Repeat("x", maxBodyBytes) + `"}`, 400, 3, "exceeds"},

		{"api-token no auth", "GET", pathAPIToken, "", "", 401, 16, ""},
		{"api-token raw token", "GET", pathAPIToken, testToken, "", 401, 16, "Bearer"},
		{"api-token denied", "GET", pathAPIToken, bearer(deniedToken), "", 403, 7, "permission denied"},

		{"oidc missing orgId", "POST", pathOIDC, "", fmt.Sprintf(`{"oidcToken":%q}`, jwt), 400, 3, "orgId required"},
		{"oidc missing token", "POST", pathOIDC, "", `{"orgId":"cw123"}`, 400, 3, "oidcToken required"},
		{"oidc token not a string", "POST", pathOIDC, "", `{"orgId":"cw123","oidcToken":5}`, 400, 3, "oidcToken must be a string"},
		{"oidc duration too long", "POST", pathOIDC, "", oidcBody(testOrg, jwt, 43201), 400, 3, "43200"},
		{"oidc wrong org", "POST", pathOIDC, "", oidcBody("cw999", jwt, 60), 400, 3, "Invalid token"},
		{"oidc garbage token", "POST", pathOIDC, "", oidcBody(testOrg, "not-a-jwt", 60), 400, 3, "Invalid token"},
		{"oidc bad attribute", "POST", pathOIDC, "", fmt.Sprintf(`{"orgId":"cw123","oidcToken":%q,"attributes":{"cw-x":"y"}}`, jwt), 400, 3, `"cw-x"`},

		{"container no auth", "GET", pathOIDC + "/" + testOrg, "", "", 401, 16, "missing Authorization"},
		{"container Bearer prefix", "GET", pathOIDC + "/" + testOrg, bearer(jwt), "", 401, 16, "Bearer"},
		{"container wrong org", "GET", pathOIDC + "/cw999", jwt, "", 400, 3, "Invalid token"},
		{"container garbage token", "GET", pathOIDC + "/" + testOrg, "x.y.z", "", 400, 3, "Invalid token"},

		{"saml missing orgId", "POST", pathSAML, "", fmt.Sprintf(`{"configId":"samlcfg","samlResponse":%q}`, saml), 400, 3, "orgId required"},
		{"saml missing configId", "POST", pathSAML, "", fmt.Sprintf(`{"orgId":"cw123","samlResponse":%q}`, saml), 400, 3, "configId required"},
		{"saml missing response", "POST", pathSAML, "", `{"orgId":"cw123","configId":"samlcfg"}`, 400, 3, "samlResponse required"},
		{"saml unknown config", "POST", pathSAML, "", samlBody(testOrg, "nope", saml, 60), 400, 3, "SAML configuration"},
		{"saml org mismatch", "POST", pathSAML, "", samlBody("cw999", testSAMLConfig, saml, 60), 400, 3, "SAML configuration"},
		{"saml bad base64", "POST", pathSAML, "", samlBody(testOrg, testSAMLConfig, "%%%", 60), 400, 3, "base64"},
		{"saml duration too long", "POST", pathSAML, "", samlBody(testOrg, testSAMLConfig, saml, 50000), 400, 3, "43200"},

		{"unknown path", "GET", "/v1/cwobject/nope", bearer(testToken), "", 404, 5, "no such endpoint"},
		{"root", "GET", "/", "", "", 404, 5, ""},
		{"wrong method on mint", "DELETE", pathAccessKey, bearer(testToken), "", 405, 12, "method not allowed"},
		{"wrong method on api-token", "POST", pathAPIToken, bearer(testToken), "", 405, 12, ""},
		{"wrong method on control", "PUT", "/_emulator/stats", "", "", 405, 12, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, tc.auth, tc.body)
			wantError(t, r, tc.status, tc.code, tc.msg)
			for _, secret := range []string{testToken, deniedToken, jwt} {
				if strings.Contains(r.raw, secret) {
					t.Errorf("reply echoes a token: %s", r.raw)
				}
			}
		})
	}
	if n := len(e.emu.Keys()); n != 0 {
		t.Errorf("%d keys minted by failing requests, want 0", n)
	}
	if st := e.emu.Stats(); len(st.Mints) != 0 || st.InFlight != 0 {
		t.Errorf("Stats() = %+v, want no mints and nothing in flight", st)
	}
}

func TestDurationOptions(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.MaxDuration = time.Hour
		o.DefaultFederatedDuration = 2 * time.Hour // capped at MaxDuration
	})
	r := e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, validJWT(e), 0))
	if r["expiry"] != "2026-07-14T13:00:00Z" {
		t.Errorf("default federated expiry = %v, want MaxDuration from now", r["expiry"])
	}
	wantError(t, e.do("POST", pathAccessKey, bearer(testToken), `{"durationSeconds":3601}`), 400, 3, "at most 3600")
	e.mustOK("POST", pathAccessKey, bearer(testToken), `{"durationSeconds":3600}`)
}

func TestKeyLifecycle(t *testing.T) {
	var revoked []string
	var mu sync.Mutex
	e := newEnv(t, func(o *Options) {
		o.OnRevoke = func(id string) {
			mu.Lock()
			defer mu.Unlock()
			revoked = append(revoked, id)
		}
	})
	auth := bearer(testToken)
	mint := func(body string) string {
		return e.mustOK("POST", pathAccessKey, auth, body)["accessKeyId"].(string)
	}
	permanent := mint(`{"durationSeconds":0,"attributes":{"kind":"permanent"}}`)
	short := mint(`{"durationSeconds":60}`)
	long := mint(`{"durationSeconds":7200}`)
	oidc := e.mustOK("POST", pathOIDC, "", oidcBody(testOrg, validJWT(e), 600))["accessKeyId"].(string)
	other := e.mustOK("POST", pathAccessKey, bearer(otherOrgToken), `{"durationSeconds":3600}`)["accessKeyId"].(string)

	list := func(query string) []string {
		t.Helper()
		body := e.mustOK("GET", pathAccessKey+query, auth, "")
		wantFields(t, body, "info")
		var ids []string
		for _, v := range body["info"].([]any) {
			info := v.(map[string]any)
			wantFields(t, info, "accessKeyId", "status", "principalName", "attributes", "expiry", "orgId", "multiAttributes")
			ids = append(ids, info["accessKeyId"].(string))
		}
		return ids
	}
	status := func(id string) string {
		t.Helper()
		body := e.mustOK("GET", pathAccessKey+"/"+id, auth, "")
		wantFields(t, body, "info")
		return body["info"].(map[string]any)["status"].(string)
	}
	wantList := func(query string, want ...string) {
		t.Helper()
		if got := list(query); !slices.Equal(got, want) {
			t.Errorf("list%s = %v, want %v", query, got, want)
		}
	}

	wantList("", permanent, short, long, oidc)
	wantList("?offset=1&limit=2", short, long)
	wantList("?offset=3&limit=0", oidc)
	wantList("?offset=9")
	wantList("?status=ACCESS_KEY_STATUS_ACTIVE", permanent, short, long, oidc)
	wantList("?status=SUSPENDED")
	if got := e.mustOK("GET", pathAccessKey, bearer(otherOrgToken), "")["info"].([]any); len(got) != 1 {
		t.Errorf("other org lists %d keys, want its 1", len(got))
	}
	for _, q := range []string{"?limit=1001", "?limit=-1", "?offset=x", "?status=DELETED", "?status=0"} {
		wantError(t, e.do("GET", pathAccessKey+q, auth, ""), 400, 3, "")
	}

	info := e.mustOK("GET", pathAccessKey+"/"+permanent, auth, "")["info"].(map[string]any)
	want := map[string]any{
		"accessKeyId": permanent, "status": "ACTIVE", "principalName": "coreweave/u1",
		"attributes": map[string]any{"kind": "permanent"}, "expiry": permanentStamp,
		"orgId": testOrg, "multiAttributes": map[string]any{},
	}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("AccessKeyInfo = %v, want %v", info, want)
	}
	wantError(t, e.do("GET", pathAccessKey+"/"+other, auth, ""), 404, 5, "not found")
	wantError(t, e.do("GET", pathAccessKey+"/CWNOSUCHKEY00000", auth, ""), 404, 5, "not found")

	// Expiry follows the clock.
	e.clk.Advance(61 * time.Second)
	if s := status(short); s != StatusExpired {
		t.Errorf("status of expired key = %s, want EXPIRED", s)
	}
	if s := status(permanent); s != StatusActive {
		t.Errorf("status of permanent key = %s, want ACTIVE", s)
	}

	// Suspend and reactivate every key of a principal, both spellings and numbers.
	for _, tc := range []struct{ status, want string }{
		{`"ACCESS_KEY_STATUS_SUSPENDED"`, StatusSuspended},
		{`1`, StatusActive},
		{`"SUSPENDED"`, StatusSuspended},
		{`"ACTIVE"`, StatusActive},
		{`2`, StatusSuspended},
	} {
		body := e.mustOK("PUT", pathUpdateStatus, auth, `{"principalName":"coreweave/u1","status":`+tc.status+`}`)
		wantFields(t, body)
		if s := status(long); s != tc.want {
			t.Errorf("after status %s: key status = %s, want %s", tc.status, s, tc.want)
		}
	}
	if s := status(short); s != StatusExpired {
		t.Errorf("suspended expired key = %s, want EXPIRED", s)
	}
	if s := status(oidc); s != StatusActive {
		t.Errorf("another principal's key = %s, want ACTIVE", s)
	}
	wantList("?status=2", permanent, long)
	for _, body := range []string{
		`{"principalName":"coreweave/u1","status":"INVALID"}`,
		`{"principalName":"coreweave/u1","status":0}`,
		`{"principalName":"coreweave/u1","status":"1"}`,
		`{"principalName":"coreweave/u1"}`,
		`{"status":"ACTIVE"}`,
	} {
		wantError(t, e.do("PUT", pathUpdateStatus, auth, body), 400, 3, "")
	}

	// Revoke one key; it stays listed as DELETED, and revoking again succeeds.
	wantFields(t, e.mustOK("POST", pathRevokeKey, auth, `{"accessKey":"`+long+`"}`))
	e.mustOK("POST", pathRevokeKey, auth, `{"access_key":"`+long+`"}`)
	if s := status(long); s != StatusDeleted {
		t.Errorf("revoked key status = %s, want DELETED", s)
	}
	wantList("", permanent, short, long, oidc)
	wantError(t, e.do("POST", pathRevokeKey, auth, `{"accessKey":"CWNOSUCHKEY00000"}`), 404, 5, "not found")
	wantError(t, e.do("POST", pathRevokeKey, auth, `{"accessKey":"`+other+`"}`), 404, 5, "not found")
	wantError(t, e.do("POST", pathRevokeKey, auth, `{}`), 400, 3, "accessKey required")

	// Revoke a principal: only its keys, only in the caller's org.
	wantFields(t, e.mustOK("POST", pathRevokePrincipal, auth, `{"principalName":"coreweave/u1"}`))
	e.mustOK("POST", pathRevokePrincipal, auth, `{"principalName":"coreweave/nobody"}`)
	wantError(t, e.do("POST", pathRevokePrincipal, auth, `{}`), 400, 3, "principalName required")
	for id, want := range map[string]string{permanent: StatusDeleted, short: StatusDeleted, oidc: StatusActive} {
		if s := status(id); s != want {
			t.Errorf("after revoking coreweave/u1: %s is %s, want %s", id, s, want)
		}
	}
	if k, _ := e.emu.Key(other); k.Status != StatusActive {
		t.Errorf("other org's key is %s, want ACTIVE", k.Status)
	}
	mu.Lock()
	if want := []string{long, permanent, short}; !slices.Equal(revoked, want) {
		t.Errorf("OnRevoke saw %v, want %v", revoked, want)
	}
	mu.Unlock()

	// Management endpoints need TokenAuth and count requests.
	for _, tc := range []struct{ method, path, body string }{
		{"GET", pathAccessKey, ""},
		{"GET", pathAccessKey + "/" + oidc, ""},
		{"POST", pathRevokeKey, `{"accessKey":"` + oidc + `"}`},
		{"POST", pathRevokePrincipal, `{"principalName":"x"}`},
		{"PUT", pathUpdateStatus, `{"principalName":"x","status":"ACTIVE"}`},
	} {
		wantError(t, e.do(tc.method, tc.path, "", tc.body), 401, 16, "")
		wantError(t, e.do(tc.method, tc.path, bearer(deniedToken), tc.body), 403, 7, "permission denied")
	}
	if st := e.emu.Stats(); st.Requests[EndpointList] == 0 || st.Requests[EndpointGet] == 0 ||
		st.Requests[EndpointRevokeKey] == 0 || st.Requests[EndpointRevokePrincipal] == 0 || st.Requests[EndpointUpdateStatus] == 0 {
		t.Errorf("Stats().Requests = %v, want every management endpoint counted", st.Requests)
	}

	keys := e.emu.Keys()
	if len(keys) != 5 || keys[0].AccessKeyID != permanent || keys[4].AccessKeyID != other {
		t.Errorf("Keys() not every key in mint order: %v", keys)
	}
	keys[0].Attributes["kind"] = "mutated"
	if k, _ := e.emu.Key(permanent); k.Attributes["kind"] != "permanent" {
		t.Errorf("Keys() shares attribute maps with the emulator")
	}
}

func TestOnMint(t *testing.T) {
	var e *env
	var got []Key
	e = newEnv(t, func(o *Options) {
		o.OnMint = func(k Key) {
			if _, ok := e.emu.Key(k.AccessKeyID); !ok {
				t.Errorf("OnMint(%s) ran before the key was stored", k.AccessKeyID)
			}
			got = append(got, k) // requests below are sequential
		}
	})
	body := e.mustOK("POST", pathAccessKey, bearer(testToken), `{"durationSeconds":60,"attributes":{"a":"b"}}`)
	e.mustOK("GET", pathAPIToken, bearer(testToken), "")
	e.do("POST", pathAccessKey, "", `{"durationSeconds":60}`) // fails: no hook
	if len(got) != 2 {
		t.Fatalf("OnMint called %d times, want 2", len(got))
	}
	k := got[0]
	if k.AccessKeyID != body["accessKeyId"] || k.SecretKey != body["secretKey"] || k.Principal != "coreweave/u1" ||
		k.Attributes["a"] != "b" || k.Endpoint != EndpointAccessKey || !k.Created.Equal(e.clk.Now()) {
		t.Errorf("OnMint got %+v, want the key replied %v", k, body)
	}
}

func TestBrokenRandomSource(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Rand = strings.NewReader(strings.Repeat("\xff", 4096)) })
	wantError(t, e.do("POST", pathAccessKey, bearer(testToken), `{"durationSeconds":60}`), 500, 13, "")
	e2 := newEnv(t, func(o *Options) { o.Rand = strings.NewReader("") })
	wantError(t, e2.do("GET", pathAPIToken, bearer(testToken), ""), 500, 13, "")
}

func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	const n = 32
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Go(func() {
			r, err := e.try("POST", pathAccessKey, bearer(testToken), `{"durationSeconds":60}`)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i], _ = r.body["accessKeyId"].(string)
			if _, err := e.try("GET", pathAccessKey, bearer(testToken), ""); err != nil {
				t.Error(err)
			}
			e.emu.Stats()
			e.emu.Keys()
		})
	}
	wg.Wait()
	slices.Sort(ids)
	if len(slices.Compact(ids)) != n || ids[0] == "" {
		t.Errorf("%d concurrent mints gave ids %v, want %d distinct", n, ids, n)
	}
	if st := e.emu.Stats(); st.Mints[EndpointAccessKey] != n || st.InFlight != 0 {
		t.Errorf("Stats() = %+v, want %d mints, none in flight", st, n)
	}
}

func TestRequestEdgeCases(t *testing.T) {
	e := newEnv(t)
	jwt := validJWT(e)
	tests := []struct {
		name, method, path string
		auth               []string
		body               string
		status, code       int
		msg                string
	}{
		{"two bearer headers", "POST", pathAccessKey, []string{bearer(testToken), bearer(testToken)}, `{"durationSeconds":60}`, 401, 16, "more than one"},
		{"two JWT headers", "GET", pathOIDC + "/" + testOrg, []string{jwt, jwt}, "", 401, 16, "more than one"},
		{"null body", "POST", pathRevokeKey, []string{bearer(testToken)}, `null`, 400, 3, "accessKey required"},
		{"access key not a string", "POST", pathRevokeKey, []string{bearer(testToken)}, `{"accessKey":1}`, 400, 3, "accessKey must be a string"},
		{"principal not a string", "PUT", pathUpdateStatus, []string{bearer(testToken)}, `{"principalName":[]}`, 400, 3, "principalName"},
		{"status an object", "PUT", pathUpdateStatus, []string{bearer(testToken)}, `{"principalName":"p","status":{}}`, 400, 3, "status"},
		{"revoke bad JSON", "POST", pathRevokePrincipal, []string{bearer(testToken)}, `{`, 400, 3, "JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(t.Context(), tc.method, tc.path, strings.NewReader(tc.body))
			for _, a := range tc.auth {
				req.Header.Add("Authorization", a)
			}
			rec := httptest.NewRecorder()
			e.emu.ServeHTTP(rec, req)
			r := reply{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
			_ = json.Unmarshal(rec.Body.Bytes(), &r.body)
			wantError(t, r, tc.status, tc.code, tc.msg)
		})
	}
}
