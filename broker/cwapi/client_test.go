package cwapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recorded is one request a fake upstream saw.
type recorded struct {
	method, path, authz, contentType string
	body                             map[string]any
}

// fakeUpstream answers every request with status and body, recording it.
func fakeUpstream(t *testing.T, status int, body string, header http.Header) (*Client, *[]recorded) {
	t.Helper()
	var seen []recorded
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := recorded{method: r.Method, path: r.URL.Path, authz: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type")}
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			if err := json.Unmarshal(b, &rec.body); err != nil {
				t.Errorf("request body is not JSON: %v", err)
			}
		}
		seen = append(seen, rec)
		for k, v := range header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c, &seen
}

const camelReply = `{"accessKeyId":"CWABCDEFGHIJKLMN","secretKey":"cwo1234","principalName":"coreweave/u1","expiry":"2030-01-01T09:15:01Z","attributes":{"a":"b"}}`

func TestClientRequests(t *testing.T) {
	attrs := map[string]string{AttrProfile: "train"}
	tests := []struct {
		name      string
		reply     string
		call      func(c *Client) (*Credentials, error)
		method    string
		path      string
		authz     string
		wantBody  map[string]any
		principal string
	}{
		{
			name:  "access-key",
			reply: camelReply,
			call: func(c *Client) (*Credentials, error) {
				return c.CreateAccessKey(t.Context(), "CW-SECRET-x", time.Hour, attrs)
			},
			method: "POST", path: PathAccessKey, authz: "Bearer CW-SECRET-x",
			wantBody:  map[string]any{"durationSeconds": 3600.0, "attributes": map[string]any{AttrProfile: "train"}},
			principal: "coreweave/u1",
		},
		{
			name:  "api-token",
			reply: `{"AccessKeyId":"CWABCDEFGHIJKLMN","SecretAccessKey":"cwo1234","Token":"","Expiration":"2030-01-01T09:15:01Z","attributes":{},"multiAttributes":{}}`,
			call: func(c *Client) (*Credentials, error) {
				return c.CreateAccessKeyFromAPIToken(t.Context(), "CW-SECRET-x")
			},
			method: "GET", path: PathAPITokenCreds, authz: "Bearer CW-SECRET-x",
		},
		{
			name:  "oidc",
			reply: camelReply,
			call: func(c *Client) (*Credentials, error) {
				return c.CreateAccessKeyFromOIDC(t.Context(), "cw123", "a.b.c", 30*time.Minute, attrs)
			},
			method: "POST", path: PathOIDCCreds,
			wantBody:  map[string]any{"orgId": "cw123", "oidcToken": "a.b.c", "durationSeconds": 1800.0, "attributes": map[string]any{AttrProfile: "train"}},
			principal: "coreweave/u1",
		},
		{
			name:  "saml",
			reply: camelReply,
			call: func(c *Client) (*Credentials, error) {
				return c.CreateAccessKeyFromSAML(t.Context(), "cw123", "cfg1", "PHNhbWw+", 2*time.Hour, nil)
			},
			method: "POST", path: PathSAMLCreds,
			wantBody:  map[string]any{"orgId": "cw123", "configId": "cfg1", "samlResponse": "PHNhbWw+", "durationSeconds": 7200.0},
			principal: "coreweave/u1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, seen := fakeUpstream(t, 200, tc.reply, nil)
			k, err := tc.call(c)
			if err != nil {
				t.Fatalf("mint: %v", err)
			}
			want := Credentials{AccessKeyID: "CWABCDEFGHIJKLMN", SecretAccessKey: "cwo1234", Principal: tc.principal, Expires: time.Date(2030, 1, 1, 9, 15, 1, 0, time.UTC)}
			if *k != want {
				t.Errorf("key = %+v, want %+v", *k, want)
			}
			if len(*seen) != 1 {
				t.Fatalf("requests = %d, want 1", len(*seen))
			}
			r := (*seen)[0]
			if r.method != tc.method || r.path != tc.path || r.authz != tc.authz {
				t.Errorf("request = %s %s authz %q, want %s %s authz %q", r.method, r.path, r.authz, tc.method, tc.path, tc.authz)
			}
			if tc.wantBody != nil {
				if r.contentType != "application/json" {
					t.Errorf("Content-Type = %q", r.contentType)
				}
				gb, _ := json.Marshal(r.body)
				wb, _ := json.Marshal(tc.wantBody)
				if string(gb) != string(wb) {
					t.Errorf("body = %s, want %s", gb, wb)
				}
			} else if r.body != nil {
				t.Errorf("GET sent a body: %v", r.body)
			}
		})
	}
}

func TestClientReplyForms(t *testing.T) {
	tests := []struct {
		name    string
		reply   string
		want    time.Time
		wantID  string
		wantErr error
	}{
		{"accessKeyID spelling", `{"accessKeyID":"CWOLD","secretKey":"s","expiry":"2030-01-01T00:00:00Z"}`, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), "CWOLD", nil},
		{"fractional seconds", `{"accessKeyId":"CWA","secretKey":"s","expiry":"2030-01-01T00:00:00.123456789Z"}`, time.Date(2030, 1, 1, 0, 0, 0, 123456789, time.UTC), "CWA", nil},
		{"offset becomes UTC", `{"accessKeyId":"CWA","secretKey":"s","expiry":"2030-01-01T02:00:00+02:00"}`, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), "CWA", nil},
		{"permanent epoch", `{"accessKeyId":"CWA","secretKey":"s","expiry":"1970-01-01T00:00:00Z"}`, time.Time{}, "CWA", nil},
		{"permanent year one", `{"accessKeyId":"CWA","secretKey":"s","expiry":"0001-01-01T00:00:00Z"}`, time.Time{}, "CWA", nil},
		{"permanent absent", `{"accessKeyId":"CWA","secretKey":"s"}`, time.Time{}, "CWA", nil},
		{"missing secret", `{"accessKeyId":"CWA","expiry":"2030-01-01T00:00:00Z"}`, time.Time{}, "", ErrBadReply},
		{"missing id", `{"secretKey":"s","expiry":"2030-01-01T00:00:00Z"}`, time.Time{}, "", ErrBadReply},
		{"id with quote", `{"accessKeyId":"CW\"A","secretKey":"s"}`, time.Time{}, "", ErrBadReply},
		{"bad expiry", `{"accessKeyId":"CWA","secretKey":"s","expiry":"tomorrow"}`, time.Time{}, "", ErrBadReply},
		{"not JSON", `<html>gateway</html>`, time.Time{}, "", ErrBadReply},
		{"truncated", `{"accessKeyId":"CWA","secretKey":"cwoTOPSECRET`, time.Time{}, "", ErrBadReply},
		{"wrong type", `{"accessKeyId":12,"secretKey":"cwoTOPSECRET"}`, time.Time{}, "", ErrBadReply},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := fakeUpstream(t, 200, tc.reply, nil)
			k, err := c.CreateAccessKey(t.Context(), "tok", time.Hour, nil)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "TOPSECRET") {
					t.Errorf("error leaks reply content: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.AccessKeyID != tc.wantID || !k.Expires.Equal(tc.want) || k.Expires.Location() != time.UTC {
				t.Errorf("key = %+v, want id %s expiry %s UTC", k, tc.wantID, tc.want)
			}
		})
	}
}

func TestClientAPIErrors(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		status     int
		body       string
		header     http.Header
		want       APIError
		temporary  bool
		rejected   bool
		notContain string
	}{
		{"unauthenticated", 401, `{"code":16,"message":"invalid token","details":[]}`, nil,
			APIError{StatusCode: 401, Code: 16, Message: "invalid token"}, false, true, ""},
		{"permission denied", 403, `{"code":7,"message":"permission denied","details":[]}`, nil,
			APIError{StatusCode: 403, Code: 7, Message: "permission denied"}, false, true, ""},
		{"invalid argument", 400, `{"code":3,"message":"duration out of range","details":[]}`, nil,
			APIError{StatusCode: 400, Code: 3, Message: "duration out of range"}, false, false, ""},
		{"throttled with Retry-After", 429, `{"code":8,"message":"slow down"}`, http.Header{"Retry-After": {"12"}},
			APIError{StatusCode: 429, Code: 8, Message: "slow down", RetryAfter: 12 * time.Second}, true, false, ""},
		{"unavailable with date", 503, `{"code":14,"message":"try later"}`, http.Header{"Retry-After": {now.Add(time.Hour).UTC().Format(http.TimeFormat)}},
			APIError{StatusCode: 503, Code: 14, Message: "try later", RetryAfter: time.Hour}, true, false, ""},
		{"non-JSON body", 502, `<html>bad gateway</html>`, nil,
			APIError{StatusCode: 502}, true, false, ""},
		{"connect string code", 400, `{"code":"invalid_argument","message":"bad"}`, nil,
			APIError{StatusCode: 400, Message: "bad"}, false, false, ""},
		{"echoed token scrubbed", 401, `{"code":16,"message":"token CW-SECRET-hunter2 is invalid\nsecond line"}`, nil,
			APIError{StatusCode: 401, Code: 16, Message: "token [REDACTED] is invalid second line"}, false, true, "hunter2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := fakeUpstream(t, tc.status, tc.body, tc.header)
			_, err := c.CreateAccessKey(t.Context(), "CW-SECRET-hunter2", time.Hour, nil)
			var got *APIError
			if !errors.As(err, &got) {
				t.Fatalf("err = %v, want *APIError", err)
			}
			tc.want.Endpoint = PathAccessKey
			if d := got.RetryAfter - tc.want.RetryAfter; d < -2*time.Second || d > 2*time.Second {
				t.Errorf("RetryAfter = %s, want %s", got.RetryAfter, tc.want.RetryAfter)
			}
			got.RetryAfter, tc.want.RetryAfter = 0, 0
			if *got != tc.want {
				t.Errorf("APIError = %+v, want %+v", *got, tc.want)
			}
			if got.Temporary() != tc.temporary || got.Unauthorized() != tc.rejected {
				t.Errorf("Temporary, Unauthorized = %v, %v; want %v, %v", got.Temporary(), got.Unauthorized(), tc.temporary, tc.rejected)
			}
			if tc.notContain != "" && strings.Contains(err.Error(), tc.notContain) {
				t.Errorf("error %q contains %q", err, tc.notContain)
			}
		})
	}
}

func TestClientOversizeReply(t *testing.T) {
	c, _ := fakeUpstream(t, 200, `{"accessKeyId":"`+strings.Repeat("A", maxReplyBytes)+`"}`, nil)
	if _, err := c.CreateAccessKey(t.Context(), "tok", time.Hour, nil); !errors.Is(err, ErrBadReply) {
		t.Errorf("err = %v, want ErrBadReply", err)
	}
}

func TestClientNeverMintsPermanentKeys(t *testing.T) {
	c, seen := fakeUpstream(t, 200, camelReply, nil)
	for _, d := range []time.Duration{0, -time.Second, 500 * time.Millisecond, 12*time.Hour + time.Second} {
		if _, err := c.CreateAccessKey(t.Context(), "tok", d, nil); err == nil {
			t.Errorf("CreateAccessKey(%s) succeeded, want an error", d)
		}
	}
	if len(*seen) != 0 {
		t.Errorf("%d requests sent for invalid durations", len(*seen))
	}
}

func TestClientRevoke(t *testing.T) {
	c, seen := fakeUpstream(t, 200, `{}`, nil)
	if err := c.RevokeAccessKey(t.Context(), "tok", "CWABC"); err != nil {
		t.Fatal(err)
	}
	r := (*seen)[0]
	if r.method != "POST" || r.path != PathRevokeByKey || r.authz != "Bearer tok" || r.body["accessKey"] != "CWABC" {
		t.Errorf("request = %+v", r)
	}
}

func TestNewClientRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "api.coreweave.com", "ftp://x", "https://"} {
		if _, err := NewClient(u); err == nil {
			t.Errorf("NewClient(%q) succeeded", u)
		}
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
		wantErr             bool
	}{
		{"plain", "CW-SECRET-abc", "CW-SECRET-abc", false},
		{"trailing newline dropped", "CW-SECRET-abc\n", "CW-SECRET-abc", false},
		{"trailing CRLF dropped", "CW-SECRET-abc\r\n", "CW-SECRET-abc", false},
		{"empty", "", "", true},
		{"only newline", "\n", "", true},
		{"embedded newline", "CW-SECRET\n-abc", "", true},
		{"embedded CR", "CW-SECRET\r-abc", "", true},
		{"two trailing newlines", "CW-SECRET-abc\n\n", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadTokenFile(p)
			if tc.wantErr {
				if !errors.Is(err, ErrBadToken) {
					t.Fatalf("err = %v, want ErrBadToken", err)
				}
				if strings.Contains(err.Error(), "abc") {
					t.Errorf("error leaks token content: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ReadTokenFile = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := ReadTokenFile(filepath.Join(dir, "missing")); !errors.Is(err, ErrBadToken) {
		t.Errorf("missing file: err = %v, want ErrBadToken", err)
	}
}

func TestMinterRereadsTokenFileEveryMint(t *testing.T) {
	c, seen := fakeUpstream(t, 200, camelReply, nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	m, err := c.Minter(MintSpec{Name: "p", Source: SourceAccessKey, TokenFile: tokenFile, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"CW-SECRET-one", "CW-SECRET-two"} {
		// Rotate the way Kubernetes does: write elsewhere, then rename over.
		tmp := tokenFile + ".new"
		if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, tokenFile); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Mint(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if len(*seen) != 2 || (*seen)[0].authz != "Bearer CW-SECRET-one" || (*seen)[1].authz != "Bearer CW-SECRET-two" {
		t.Errorf("requests = %+v, want one per token in rotation order", *seen)
	}
}

func TestMinterValidatesProfile(t *testing.T) {
	c, _ := fakeUpstream(t, 200, camelReply, nil)
	bad := []MintSpec{
		{Name: "a", Source: SourceAccessKey, Duration: time.Hour},
		{Name: "b", Source: SourceOIDC, TokenFile: "/t", Duration: time.Hour},
		{Name: "c", Source: SourceSAML, TokenFile: "/t", OrgID: "o", Duration: time.Hour},
		{Name: "d", Source: SourceAccessKey, TokenFile: "/t"},
		{Name: "e", Source: "kerberos", TokenFile: "/t", Duration: time.Hour},
	}
	for _, p := range bad {
		if _, err := c.Minter(p); err == nil {
			t.Errorf("Minter(%+v) succeeded", p)
		}
	}
	if _, err := c.Minter(MintSpec{Name: "f", Source: SourceAPIToken, TokenFile: "/t"}); err != nil {
		t.Errorf("api-token without duration: %v", err)
	}
}

func TestAuditAttributes(t *testing.T) {
	got := AuditAttributes("gpu-node-01.cluster.example:7/α", "train")
	if got[AttrNode] != "gpu-node-01.cluster.example-7" || got[AttrProfile] != "train" {
		t.Errorf("AuditAttributes = %v", got)
	}
	long := AuditAttributes(strings.Repeat("n", 100)+".", "p")
	if len(long[AttrNode]) != 63 {
		t.Errorf("node attribute length %d, want 63", len(long[AttrNode]))
	}
	if _, ok := AuditAttributes("...", "p")[AttrNode]; ok {
		t.Errorf("an unusable node name must be left out")
	}
}
