package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// workloadDaemon runs cwcreds serve with two workload-oidc profiles on an
// emulated CoreWeave whose own OIDC issuer signs the workloads' tokens:
// "pods" shares keys per token, "team" per identity (signatures verified
// against the issuer's keys, found by OIDC discovery).
func workloadDaemon(t *testing.T) (*daemon, *cwapitest.Issuer) {
	t.Helper()
	clearEnv(t, "CWCREDS_")
	emu, emuSrv, iss := issuingUpstream(t)
	dir := t.TempDir()
	env := map[string]string{
		"CWCREDS_LISTEN_ADDR":          "127.0.0.1:0",
		"CWCREDS_API_URL":              emuSrv.URL,
		"CWCREDS_LOG_LEVEL":            "debug",
		"CWCREDS_RUNTIME_DIR":          filepath.Join(dir, "run"),
		"CWCREDS_NODE_NAME":            "gpu-node-7",
		"CWCREDS_PROFILES":             "pods,team",
		"CWCREDS_PROFILE_PODS_SOURCE":  "workload-oidc",
		"CWCREDS_PROFILE_PODS_ORG_ID":  "cw123",
		"CWCREDS_PROFILE_PODS_ISSUERS": iss.URL(),
		"CWCREDS_PROFILE_TEAM_SOURCE":  "workload-oidc",
		"CWCREDS_PROFILE_TEAM_ORG_ID":  "cw123",
		"CWCREDS_PROFILE_TEAM_ISSUERS": iss.URL(),
		"CWCREDS_PROFILE_TEAM_SHARE":   "identity",
	}
	return runWithEnv(t, emu, emuSrv.URL, dir, env), iss
}

// issuingUpstream starts an emulated CoreWeave API that is also the OIDC
// issuer workloads' tokens come from (at <its URL>/oidc), trusted for
// organization cw123 with CoreWeave's audience.
func issuingUpstream(t *testing.T) (*cwapitest.Emulator, *httptest.Server, *cwapitest.Issuer) {
	t.Helper()
	emu := cwapitest.New(cwapitest.Options{})
	emuSrv := httptest.NewServer(emu)
	t.Cleanup(emuSrv.Close)
	iss, err := emu.StartIssuer(emuSrv.URL, cwapitest.OIDCIssuer{OrgID: "cw123", Audience: cwapitest.DefaultAudience})
	if err != nil {
		t.Fatal(err)
	}
	return emu, emuSrv, iss
}

// oidcMints is how many OIDC mints the emulator has made.
func oidcMints(d *daemon) int {
	return d.emu.Stats().Mints[cwapitest.EndpointOIDC]
}

// sdkKey fetches a key the way aws-sdk-go-v2's container provider does,
// with token as AWS_CONTAINER_AUTHORIZATION_TOKEN.
func sdkKey(t *testing.T, d *daemon, profile, token string) (string, error) {
	t.Helper()
	p := endpointcreds.New("http://"+d.addr+"/v1/credentials/"+profile, func(o *endpointcreds.Options) {
		o.AuthorizationToken = token
	})
	c, err := p.Retrieve(context.Background())
	return c.AccessKeyID, err
}

func TestWorkloadTokensBuyTheirOwnKeys(t *testing.T) {
	d, iss := workloadDaemon(t)
	podA := iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-0", Node: "gpu-node-7"})
	podB := iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-1", Node: "gpu-node-7"})

	// Token mode: one key per token, every process of a pod sharing it.
	var keyA string
	for i := range 20 {
		k, err := sdkKey(t, d, "pods", podA)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if keyA == "" {
			keyA = k
		} else if k != keyA {
			t.Fatalf("request %d got key %s, want the token's key %s", i, k, keyA)
		}
	}
	keyB, err := sdkKey(t, d, "pods", podB)
	if err != nil {
		t.Fatal(err)
	}
	if keyB == keyA {
		t.Error("two tokens share a key in token mode")
	}
	if got := oidcMints(d); got != 2 {
		t.Errorf("OIDC mints = %d for 21 requests with 2 tokens, want 2", got)
	}
	key, ok := d.emu.Key(keyA)
	if !ok {
		t.Fatalf("served key %s was not minted upstream", keyA)
	}
	if want := "role/" + iss.URL() + ":system:serviceaccount:ml:trainer"; key.Principal != want {
		t.Errorf("principal %q, want %q", key.Principal, want)
	}
	for k, want := range map[string]string{"cwcreds-node": "gpu-node-7", "cwcreds-profile": "pods",
		"k8s-namespace": "ml", "k8s-service-account": "trainer", "k8s-pod": "trainer-0"} {
		if key.Attributes[k] != want {
			t.Errorf("attribute %s = %q, want %q (all: %v)", k, key.Attributes[k], want, key.Attributes)
		}
	}
	if left := time.Until(key.Expiry); left < 59*time.Minute || left > time.Hour {
		t.Errorf("key lives %s, want DURATION's default 1h", left)
	}
	// The Expiration a client sees is its token's when that comes first.
	short := iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-2", TTL: 20 * time.Minute})
	status, body := d.get(t, "pods", short)
	exp, err := time.Parse("2006-01-02T15:04:05Z", fmt.Sprint(body["Expiration"]))
	if status != http.StatusOK || err != nil {
		t.Fatalf("short token: status %d body %v", status, body)
	}
	if left := time.Until(exp); left > 20*time.Minute || left < 19*time.Minute {
		t.Errorf("Expiration in %s for a token with 20 minutes left and a 1-hour key: want the token's", left)
	}

	// Identity mode: both pods' tokens (and a rotated one) share one key.
	k1, err := sdkKey(t, d, "team", podA)
	if err != nil {
		t.Fatal(err)
	}
	k2, err2 := sdkKey(t, d, "team", podB)
	// A renewed token (the kubelet replaces it at 80% of its life); key
	// rotation at the issuer is idtoken's tests' (it needs a clock past the
	// refetch limit).
	rotated := iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-0", TTL: 2 * time.Hour})
	k3, err3 := sdkKey(t, d, "team", rotated)
	if err2 != nil || err3 != nil || k2 != k1 || k3 != k1 {
		t.Errorf("identity mode keys %s %s (%v) %s (%v): want one key for the subject", k1, k2, err2, k3, err3)
	}
	if got := oidcMints(d); got != 4 {
		t.Errorf("OIDC mints = %d, want 4 (three tokens in token mode, one subject in identity mode)", got)
	}

	// Status: identities and mints, no token, no key list.
	st := d.getJSON(t, "/v1/profiles")
	for _, tc := range []struct {
		profile           string
		identities, mints float64
	}{{"pods", 3, 3}, {"team", 1, 1}} {
		w := profileStatus(t, st, tc.profile)["workload"].(map[string]any)
		if w["identities"] != tc.identities || w["mintsLastHour"] != tc.mints {
			t.Errorf("%s status workload = %v, want %v identities and %v mints", tc.profile, w, tc.identities, tc.mints)
		}
	}
	d.checkNoTokens(t, "", podA, podB, rotated, short)
}

func TestWorkloadRefusals(t *testing.T) {
	d, iss := workloadDaemon(t)
	good := cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-0"}
	type refusal struct {
		name, profile, token string
		status               int
		code, contains       string
	}
	refusals := []refusal{
		{"no token", "pods", "", 401, "Unauthorized", "own OIDC token"},
		{"not a JWT", "pods", "CW-SECRET-not-a-jwt", 401, "InvalidToken", "malformed"},
		{"expired", "pods", iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", TTL: -time.Minute}), 401, "InvalidToken", "expired"},
		{"wrong audience", "pods", iss.Token(cwapitest.TokenSpec{ServiceAccount: "trainer", Namespace: "ml", Audience: []string{"sts.amazonaws.com"}}), 401, "InvalidToken", "audience"},
		{"foreign issuer", "pods", iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "x", Claims: map[string]any{"iss": "https://evil.example"}}), 401, "InvalidToken", "issuer"},
		{"alg none", "pods", iss.Forge(good, cwapitest.ForgeAlgNone), 401, "InvalidToken", "algorithm"},
		{"hmac with the public key", "pods", iss.Forge(good, cwapitest.ForgeHMACPublicKey), 401, "InvalidToken", "algorithm"},
	}
	// Identity mode also verifies signatures.
	for _, f := range []struct {
		name   string
		forge  cwapitest.Forgery
		reason string
	}{
		{"alg none", cwapitest.ForgeAlgNone, "algorithm"},
		{"hmac with the public key", cwapitest.ForgeHMACPublicKey, "algorithm"},
		{"forged signature", cwapitest.ForgeForeignKey, "signature"},
		{"tampered claims", cwapitest.ForgeTampered, "signature"},
		{"unknown kid", cwapitest.ForgeUnknownKID, "signature"},
	} {
		refusals = append(refusals, refusal{"identity mode: " + f.name, "team", iss.Forge(good, f.forge), 401, "InvalidToken", f.reason})
	}
	var bodies strings.Builder // every error body, for checkNoTokens
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			status, body := d.get(t, tc.profile, tc.token)
			if status != tc.status || body["code"] != tc.code || !strings.Contains(body["message"].(string), tc.contains) {
				t.Errorf("status %d body %v; want %d %s containing %q", status, body, tc.status, tc.code, tc.contains)
			}
			bodies.WriteString(fmt.Sprint(body) + "\n")
		})
	}
	if got := d.emu.Stats().Requests[cwapitest.EndpointOIDC]; got != 0 {
		t.Errorf("upstream OIDC calls = %d after local refusals only, want 0", got)
	}

	// Token mode does not verify signatures: a forged token reaches
	// CoreWeave, which refuses it; its holder is told so (403) and its
	// retries cost no further upstream call during the backoff.
	forged := iss.Forge(good, cwapitest.ForgeForeignKey)
	for i := range 5 {
		status, body := d.get(t, "pods", forged)
		if status != http.StatusForbidden || body["code"] != "TokenRejected" {
			t.Fatalf("forged token, try %d: status %d body %v; want 403 TokenRejected", i, status, body)
		}
		bodies.WriteString(fmt.Sprint(body) + "\n")
	}
	if got := d.emu.Stats().Requests[cwapitest.EndpointOIDC]; got != 1 {
		t.Errorf("upstream OIDC calls for 5 tries of a rejected token = %d, want 1", got)
	}
	var all []string
	for _, r := range refusals {
		all = append(all, r.token)
	}
	d.checkNoTokens(t, bodies.String(), append(all, forged)...)
}

func (d *daemon) getJSON(t *testing.T, path string) any {
	t.Helper()
	resp, err := http.Get("http://" + d.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return v
}

func profileStatus(t *testing.T, st any, name string) map[string]any {
	t.Helper()
	m, _ := st.(map[string]any)
	list, _ := m["profiles"].([]any)
	for _, p := range list {
		if pm, _ := p.(map[string]any); pm["profile"] == name {
			return pm
		}
	}
	t.Fatalf("no profile %q in %v", name, st)
	return nil
}

// checkNoTokens fails if any piece of any token (checkNoSecrets'
// auditWindow bytes) appears in the daemon's log, status page, metrics, or
// bodies (the error bodies the test collected).
func (d *daemon) checkNoTokens(t *testing.T, bodies string, tokens ...string) {
	t.Helper()
	secrets := make(map[string]string)
	for i, tok := range tokens {
		if tok != "" {
			secrets[fmt.Sprintf("workload token %d", i)] = tok
		}
	}
	checkNoSecrets(t, "the log", d.logs.String(), secrets)
	checkNoSecrets(t, "error bodies", bodies, secrets)
	for _, path := range []string{"/v1/profiles", "/metrics"} {
		resp, err := http.Get("http://" + d.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		checkNoSecrets(t, path, string(b), secrets)
	}
}

func TestPrintStatusWorkloadProfile(t *testing.T) {
	var b strings.Builder
	err := printStatus(&b, []broker.Status{{Profile: "pods", Source: cwapi.SourceWorkloadOIDC, Healthy: true,
		Workload: &broker.WorkloadStatus{Identities: 42, MintsLastHour: 7}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("status output:\n%s\nwant a header and one line", b.String())
	}
	if f := strings.Fields(lines[1]); len(f) < 6 || f[0] != "pods" || f[1] != "workload-oidc" || f[2] != "ok" ||
		!strings.Contains(lines[1], "42 identities") || !strings.Contains(lines[1], "7 mints/h") {
		t.Errorf("workload line %q: want profile, source, ok, 42 identities and 7 mints/h", lines[1])
	}
}
