package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// auditWindow is the length of the pieces of each secret the audit looks
// for: a secret shown in part (truncated, one JWT segment) counts too.
const auditWindow = 16

// TestSecretsAudit runs a full scenario through the daemon at debug level
// (mints for every source, upstream failures and a retry, client errors,
// every read-only endpoint, revocations) and asserts that no upstream
// token, secret key, client token or admin token appears in any log line,
// status page, metrics page or error body, whole or in any auditWindow-byte
// piece.
//
// Background refresh is not waited for (the shortest key, 1m, refreshes
// after ~40 s); the broker's synctest tests cover it. Here a revoke, whose
// re-mint meets an injected 503 and then succeeds on retry, exercises the
// same mint, failure and retry paths.
func TestSecretsAudit(t *testing.T) {
	d := startDaemon(t)
	base := "http://" + d.addr
	var exposed strings.Builder // everything that must hold no secret
	do := func(method, path string, header map[string]string, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(path, "/v1/credentials/") {
			exposed.WriteString(method + " " + path + " -> " + string(b) + "\n")
		}
		return resp.StatusCode, string(b)
	}
	expect := func(what string, got, want int, body string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: status %d, want %d (body %s)", what, got, want, body)
		}
	}
	auth := func(tok string) map[string]string { return map[string]string{"Authorization": tok} }
	adminToken := readTrimmed(t, filepath.Join(d.cfg.RuntimeDir, "admin-token"))
	apiToken := readTrimmed(t, filepath.Join(d.dataDir, "credentials", "api-token"))
	jwt := readTrimmed(t, filepath.Join(d.dataDir, "jwt"))
	saml := readTrimmed(t, filepath.Join(d.dataDir, "saml"))

	// Mints for every source.
	for _, p := range []string{"train", "fast-exchange", "wif", "sso"} {
		st, body := do("GET", "/v1/credentials/"+p, auth(d.tokens[p]), "")
		expect("mint "+p, st, 200, body)
	}

	// Client errors: no token, another profile's token, unknown profile,
	// refused Host, browser and proxy headers.
	for _, c := range []struct {
		what   string
		path   string
		header map[string]string
		want   int
	}{
		{"no token", "/v1/credentials/train", nil, 401},
		{"wrong token", "/v1/credentials/train", auth(d.tokens["wif"]), 401},
		{"upstream token as client token", "/v1/credentials/train", auth(apiToken), 401},
		{"unknown profile", "/v1/credentials/nope", auth(d.tokens["train"]), 404},
		{"refused host", "/v1/credentials/train", map[string]string{"Authorization": d.tokens["train"], "Host": "evil.example"}, 403},
		{"origin", "/v1/credentials/train", map[string]string{"Authorization": d.tokens["train"], "Origin": "https://evil.example"}, 403},
		{"sec-fetch", "/v1/credentials/train", map[string]string{"Authorization": d.tokens["train"], "Sec-Fetch-Site": "none"}, 403},
		{"via", "/v1/credentials/train", map[string]string{"Authorization": d.tokens["train"], "Via": "1.1 squid"}, 403},
		{"revoke with a client token", "/v1/profiles/train/revoke", auth(d.tokens["train"]), 401},
	} {
		method := "GET"
		if strings.HasSuffix(c.path, "/revoke") {
			method = "POST"
		}
		st, body := do(method, c.path, c.header, "")
		expect(c.what, st, c.want, body)
	}

	// Upstream failures. train: the re-mint after a revoke meets a 503,
	// and the retry (2 s backoff) succeeds. fast-exchange: upstream
	// refuses the API token (401). wif: upstream echoes the OIDC token in a
	// 400. sso: a malformed 200 reply echoes the SAML response.
	d.emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointAccessKey, Status: 503, Count: 1, Message: "upstream busy for " + apiToken})
	d.emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointAPIToken, Status: 401, Code: 16, Message: "token " + apiToken + " revoked"})
	d.emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointOIDC, Status: 400, Message: "cannot parse " + jwt[:40] + "…" + jwt[len(jwt)-30:]})
	d.emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointSAML, Malformed: true,
		Body: `{"accessKeyId":"CWBAD","secretKey":"` + saml[:64] + `","expiry":"` + saml[len(saml)-64:] + `"}`})
	// An API token sent to the daemon is refused unused (and never logged).
	st, body := do("POST", "/v1/profiles/wif/revoke", auth(adminToken), `{"apiToken":"`+apiToken+`"}`)
	expect("revoke with an API token in the body", st, 400, body)
	// oidc and saml: revoked upstream by the caller (cwcreds revoke
	// --token-file), the daemon told only the key id.
	upstream, err := cwapi.NewClient(d.emuURL)
	if err != nil {
		t.Fatal(err)
	}
	revokedBody := func(profile string) string {
		_, b := do("GET", "/v1/credentials/"+profile, auth(d.tokens[profile]), "")
		var k struct{ AccessKeyId string }
		if err := json.Unmarshal([]byte(b), &k); err != nil || k.AccessKeyId == "" {
			t.Fatalf("GET %s before revoke: %s", profile, b)
		}
		if err := upstream.RevokeAccessKey(t.Context(), apiToken, k.AccessKeyId); err != nil {
			t.Fatalf("revoke %s's key upstream: %v", profile, err)
		}
		return `{"revokedAccessKeyId":"` + k.AccessKeyId + `"}`
	}
	for _, r := range []struct{ profile, body string }{
		{"train", ""}, {"fast-exchange", ""}, {"wif", revokedBody("wif")}, {"sso", revokedBody("sso")},
	} {
		st, body := do("POST", "/v1/profiles/"+r.profile+"/revoke", auth(adminToken), r.body)
		expect("revoke "+r.profile, st, 200, body)
	}
	for _, p := range []string{"fast-exchange", "wif", "sso"} {
		st, body := do("GET", "/v1/credentials/"+p, auth(d.tokens[p]), "")
		expect("after failed mint "+p, st, 503, body)
	}
	st, body = do("GET", "/readyz", nil, "")
	expect("readyz with failing profiles", st, 503, body)

	// train recovers on retry: wait for it, bounded.
	deadline := time.Now().Add(8 * time.Second)
	for {
		st, body := do("GET", "/v1/credentials/train", auth(d.tokens["train"]), "")
		if st == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("train not served again after the injected 503: %d %s", st, body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, p := range []string{"/v1/profiles", "/metrics", "/healthz", "/nope"} {
		do("GET", p, nil, "")
	}
	d.stop()
	d.stop = nil
	logs := d.logs.String()
	if !strings.Contains(logs, `"level":"debug"`) {
		t.Errorf("no debug lines logged: the audit must run at debug")
	}
	for _, want := range []string{"HTTP 401", "HTTP 503", "HTTP 400", "[REDACTED]", "malformed", "mint_failed", "no_valid_key"} {
		if !strings.Contains(logs+exposed.String(), want) {
			t.Errorf("scenario did not reach %q", want)
		}
	}

	secrets := map[string]string{
		"API token": apiToken, "OIDC JWT": jwt, "SAML response": saml, "admin token": adminToken,
	}
	for name, tok := range d.tokens {
		secrets["client token of "+name] = tok
	}
	for _, k := range d.emu.Keys() {
		secrets["secret key of "+k.AccessKeyID] = k.SecretKey
	}
	if len(d.emu.Keys()) < 5 {
		t.Errorf("upstream minted %d keys, want at least 5", len(d.emu.Keys()))
	}
	checkNoSecrets(t, "log output", logs, secrets)
	checkNoSecrets(t, "status, metrics and error bodies", exposed.String(), secrets)
}

// checkNoSecrets fails if haystack holds any auditWindow-byte piece of a
// secret (or a whole secret shorter than that).
func checkNoSecrets(t *testing.T, where, haystack string, secrets map[string]string) {
	t.Helper()
	pieces := make(map[string]string)
	for name, s := range secrets {
		if s == "" {
			t.Fatalf("secret %s is empty", name)
		}
		if len(s) < auditWindow {
			if strings.Contains(haystack, s) {
				t.Errorf("%s holds the %s", where, name)
			}
			continue
		}
		for i := 0; i+auditWindow <= len(s); i++ {
			pieces[s[i:i+auditWindow]] = name
		}
	}
	found := make(map[string]bool)
	for i := 0; i+auditWindow <= len(haystack); i++ {
		if name, ok := pieces[haystack[i:i+auditWindow]]; ok && !found[name] {
			found[name] = true
			lo, hi := max(0, i-60), min(len(haystack), i+auditWindow+60)
			t.Errorf("%s holds part of the %s: …%s…", where, name, haystack[lo:hi])
		}
	}
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
