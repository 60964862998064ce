package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// apiTokenUpstream starts an emulated CoreWeave API that accepts one fresh
// API access token, served through wrap when it is not nil, and writes that
// token to dir/api-token (0600, with the trailing newline editors add). It
// returns the API's base URL, the token file and the token itself (for
// tests that prove it never leaks).
func apiTokenUpstream(t *testing.T, dir string, wrap func(http.Handler) http.Handler) (apiURL, tokenFile, apiToken string) {
	t.Helper()
	emu := cwapitest.New(cwapitest.Options{})
	apiToken = "CW-SECRET-" + randomHex(16)
	emu.AddAPIToken(apiToken, cwapitest.Identity{Principal: "coreweave/u-train", OrgID: "cw123"})
	var h http.Handler = emu
	if wrap != nil {
		h = wrap(emu)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tokenFile = filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, tokenFile, apiToken
}

// envFileWriter returns a function that atomically replaces envFile with a
// daemon configuration for apiURL and runDir serving profiles (access-key
// keys of 1h from tokenFile), followed by the lines in extra.
func envFileWriter(t *testing.T, envFile, apiURL, runDir, tokenFile string) func(extra string, profiles ...string) {
	return func(extra string, profiles ...string) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "CWCREDS_LISTEN_ADDR=127.0.0.1:0\nCWCREDS_API_URL=%s\nCWCREDS_RUNTIME_DIR=%s\nCWCREDS_NODE_NAME=n1\n", apiURL, runDir)
		fmt.Fprintf(&b, "CWCREDS_PROFILES=%s\n", strings.Join(profiles, ","))
		for _, p := range profiles {
			u := strings.ToUpper(p)
			fmt.Fprintf(&b, "CWCREDS_PROFILE_%s_SOURCE=access-key\nCWCREDS_PROFILE_%s_TOKEN_FILE=%s\nCWCREDS_PROFILE_%s_DURATION=1h\n", u, u, tokenFile, u)
		}
		b.WriteString(extra)
		if err := os.WriteFile(envFile+".tmp", []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(envFile+".tmp", envFile); err != nil {
			t.Fatal(err)
		}
	}
}
