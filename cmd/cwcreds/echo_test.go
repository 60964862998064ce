package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/config"
)

// echoForms returns the ways an upstream, proxy or WAF has been seen to
// echo a credential back: whole, base64 (standard and URL), hex, split into
// chunks shorter than any scrubber's window, upper- and lower-cased, and
// reversed.
func echoForms(secret string) []string {
	var chunks []string
	for i := 0; i < len(secret); i += 6 {
		chunks = append(chunks, secret[i:min(i+6, len(secret))])
	}
	rev := []byte(secret)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return []string{
		secret,
		base64.StdEncoding.EncodeToString([]byte(secret)),
		base64.RawURLEncoding.EncodeToString([]byte("Bearer " + secret)),
		hex.EncodeToString([]byte(secret)),
		strings.Join(chunks, " "),
		strings.Join(chunks, "-"),
		strings.ToUpper(secret),
		strings.ToLower(secret),
		string(rev),
	}
}

// TestUpstreamEchoNeverPublished is finding 5 of issue 11: an upstream
// that echoes the credential it received, encoded so that no scrubber
// recognises it, must not get it published to local users: not in 503
// bodies, /v1/profiles, /readyz, /metrics, `cwcreds status` (table and
// --json) or systemd's STATUS= line. The reason published is structured:
// HTTP status, gRPC code name, a fixed phrase.
func TestUpstreamEchoNeverPublished(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusServiceUnavailable, http.StatusBadRequest} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			testUpstreamEcho(t, status)
		})
	}
}

func testUpstreamEcho(t *testing.T, status int) {
	var echoed []string // every form the upstream sent back, to look for
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		forms := echoForms(tok)
		msg := "credential " + strings.Join(forms, " | ") + " rejected"
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		codes := map[int]int{401: 16, 503: 14, 400: 3}
		_ = json.NewEncoder(w).Encode(map[string]any{"code": codes[status], "message": msg, "details": []string{}})
	}))
	t.Cleanup(upstream.Close)

	clearEnv(t, "CWCREDS_")
	dir := t.TempDir()
	secret := "CW-SECRET-" + randomHex(16)
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	echoed = echoForms(secret)
	for k, v := range map[string]string{
		"CWCREDS_LISTEN_ADDR":              "127.0.0.1:0",
		"CWCREDS_API_URL":                  upstream.URL,
		"CWCREDS_LOG_LEVEL":                "debug",
		"CWCREDS_RUNTIME_DIR":              filepath.Join(dir, "run"),
		"CWCREDS_NODE_NAME":                "gpu-node-7",
		"CWCREDS_PROFILES":                 "train",
		"CWCREDS_PROFILE_TRAIN_SOURCE":     "access-key",
		"CWCREDS_PROFILE_TRAIN_TOKEN_FILE": tokenFile,
	} {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(os.Environ())
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	d := &daemon{cfg: cfg, logs: &syncBuffer{}, dataDir: dir}
	d.run(t, serveHooks{})

	published := map[string]string{}
	get := func(path, token string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+d.addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		published[path] = string(b)
	}
	// The request mints (and fails) before it answers 503.
	get("/v1/credentials/train", d.tokens["train"])
	get("/v1/profiles", "")
	get("/readyz", "")
	get("/metrics", "")

	var profiles struct{ Profiles []broker.Status }
	if err := json.Unmarshal([]byte(published["/v1/profiles"]), &profiles); err != nil || len(profiles.Profiles) != 1 {
		t.Fatalf("/v1/profiles = %s (%v)", published["/v1/profiles"], err)
	}
	st := profiles.Profiles[0]
	published["STATUS="] = readinessStatus(d.addr, profiles.Profiles)
	for _, args := range [][]string{{"status", "--addr", d.addr}, {"status", "--json", "--addr", d.addr}} {
		var out, errb bytes.Buffer
		_ = run(context.Background(), args, os.Environ(), &out, &errb)
		published[strings.Join(args[:len(args)-2], " ")] = out.String() + errb.String()
	}

	// Structured: status, code name, fixed phrase.
	wantCode := map[int]string{401: "UNAUTHENTICATED", 503: "UNAVAILABLE", 400: "INVALID_ARGUMENT"}[status]
	if st.LastErrorHTTPStatus != status || st.LastErrorCode != wantCode || st.LastError == "" {
		t.Errorf("status: lastError %q, HTTP %d, code %q; want a phrase, HTTP %d, %s", st.LastError, st.LastErrorHTTPStatus, st.LastErrorCode, status, wantCode)
	}
	if want := fmt.Sprintf("HTTP %d (%s)", status, wantCode); !strings.Contains(published["/v1/credentials/train"], want) {
		t.Errorf("503 body %s: want it to name %s", published["/v1/credentials/train"], want)
	}
	for where, body := range published {
		if body == "" {
			t.Errorf("%s: nothing published; the test looks at nothing", where)
		}
		for _, f := range echoed {
			if strings.Contains(body, f) {
				t.Errorf("%s publishes the credential echoed as %q:\n%s", where, f, body)
			}
		}
		for _, w := range []string{"rejected", "credential CW", "| "} {
			if strings.Contains(body, w) && strings.Contains(body, "|") {
				t.Errorf("%s publishes upstream's own words (%q):\n%s", where, w, body)
			}
		}
	}
	// The log keeps upstream's message, scrubbed of the plain credential.
	logs := d.logs.String()
	if !strings.Contains(logs, "credential [REDACTED] | ") {
		t.Errorf("the log lost upstream's message:\n%s", logs)
	}
	if strings.Contains(logs, secret) {
		t.Errorf("the log holds the credential itself")
	}
}
