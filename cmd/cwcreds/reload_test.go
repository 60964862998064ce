package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/config"
)

// reloadRig is a daemon started with CWCREDS_ENV_FILE, whose file the test
// rewrites before sending SIGHUP on the reloads channel.
type reloadRig struct {
	*daemon
	envFile string
	base    map[string]string // variables every version of the file sets
	hup     chan os.Signal
	reloads int // reload log lines seen so far
}

func startReloadRig(t *testing.T, profiles map[string]string) *reloadRig {
	t.Helper()
	clearEnv(t, "CWCREDS_")
	emu := cwapitest.New(cwapitest.Options{})
	emuSrv := httptest.NewServer(emu)
	t.Cleanup(emuSrv.Close)
	dir := t.TempDir()
	apiToken := "CW-SECRET-" + randomHex(16)
	emu.AddAPIToken(apiToken, cwapitest.Identity{Principal: "coreweave/u-train", OrgID: "cw123"})
	other := "CW-SECRET-" + randomHex(16)
	emu.AddAPIToken(other, cwapitest.Identity{Principal: "coreweave/u-other", OrgID: "cw123"})
	for name, tok := range map[string]string{"api-token": apiToken, "other-token": other} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := &reloadRig{
		envFile: filepath.Join(dir, "cwcreds.env"),
		hup:     make(chan os.Signal, 1),
		base: map[string]string{
			"CWCREDS_LISTEN_ADDR": "127.0.0.1:0",
			"CWCREDS_API_URL":     emuSrv.URL,
			"CWCREDS_LOG_LEVEL":   "debug",
			"CWCREDS_RUNTIME_DIR": filepath.Join(dir, "run"),
			"CWCREDS_NODE_NAME":   "gpu-node-7",
		},
	}
	r.write(t, profiles)
	t.Setenv("CWCREDS_ENV_FILE", r.envFile)

	cfg, load, err := loadServeConfig(os.Environ())
	if err != nil {
		t.Fatalf("loadServeConfig: %v", err)
	}
	d := &daemon{emu: emu, cfg: cfg, logs: &syncBuffer{}, emuURL: emuSrv.URL, dataDir: dir}
	d.run(t, serveHooks{reloads: r.hup, load: load})
	r.daemon = d
	return r
}

// write makes the env file hold the base variables and profiles, a map
// from a profile's name to its variables (without the
// CWCREDS_PROFILE_<NAME>_ prefix), as "SOURCE=access-key\nTOKEN_FILE=api-token".
// Every variable it may set is first registered with t.Setenv and unset,
// so the test sees that the daemon never sets one in its environment.
func (r *reloadRig) write(t *testing.T, profiles map[string]string, extra ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# written by reload_test.go\n")
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range profiles {
			if !yield(n) {
				return
			}
		}
	})
	vars := map[string]string{"CWCREDS_PROFILES": strings.Join(names, ",")}
	for k, v := range r.base {
		vars[k] = v
	}
	for _, n := range names {
		for line := range strings.Lines(profiles[n]) {
			k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
			if k == "TOKEN_FILE" && !filepath.IsAbs(v) {
				v = filepath.Join(filepath.Dir(r.envFile), v)
			}
			vars["CWCREDS_PROFILE_"+strings.ToUpper(strings.ReplaceAll(n, "-", "_"))+"_"+k] = v
		}
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range vars {
			if !yield(k) {
				return
			}
		}
	}) {
		if _, registered := os.LookupEnv(k); !registered {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
		fmt.Fprintf(&b, "%s=%q\n", k, vars[k])
	}
	// Written to a temporary name and renamed, as an editor or config
	// management would.
	tmp := r.envFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, r.envFile); err != nil {
		t.Fatal(err)
	}
}

// reload sends SIGHUP and waits (bounded) for the daemon to log the outcome:
// it returns that log line's event ("reloaded" or "reload_rejected").
func (r *reloadRig) reload(t *testing.T) map[string]any {
	t.Helper()
	r.hup <- syscall.SIGHUP
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var outcomes []map[string]any
		for line := range strings.Lines(r.logs.String()) {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && (m["event"] == "reloaded" || m["event"] == "reload_rejected") {
				outcomes = append(outcomes, m)
			}
		}
		if len(outcomes) > r.reloads {
			r.reloads = len(outcomes)
			return outcomes[len(outcomes)-1]
		}
		time.Sleep(5 * time.Millisecond) // polling the log, bounded by deadline
	}
	t.Fatalf("no reload outcome logged within 10s; logs:\n%s", r.logs.String())
	return nil
}

// status returns the /v1/profiles entry of each profile.
func (r *reloadRig) status(t *testing.T) map[string]map[string]any {
	t.Helper()
	code, body := r.fetch(t, "/v1/profiles")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/profiles = %d %s", code, body)
	}
	var st struct{ Profiles []map[string]any }
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, p := range st.Profiles {
		out[p["profile"].(string)] = p
	}
	return out
}

// waitHealthy waits (bounded) until profile is healthy without any client
// asking for it: the background warm-up minted its key.
func (r *reloadRig) waitHealthy(t *testing.T, profile string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p := r.status(t)[profile]; p != nil && p["healthy"] == true {
			return p
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("profile %s not warmed within 10s: %v", profile, r.status(t)[profile])
	return nil
}

func (r *reloadRig) clientToken(t *testing.T, profile string) string {
	t.Helper()
	return readTrimmed(t, filepath.Join(r.base["CWCREDS_RUNTIME_DIR"], profile+".token"))
}

func (r *reloadRig) keyID(t *testing.T, profile string) string {
	t.Helper()
	code, body := r.get(t, profile, r.clientToken(t, profile))
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d %v", profile, code, body)
	}
	return body["AccessKeyId"].(string)
}

func totalMints(emu *cwapitest.Emulator) int {
	n := 0
	for _, m := range emu.Stats().Mints {
		n += m
	}
	return n
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

const (
	keyProfile   = "SOURCE=access-key\nTOKEN_FILE=api-token\nDURATION=2h"
	otherProfile = "SOURCE=access-key\nTOKEN_FILE=other-token\nDURATION=2h"
)

func TestReloadKeepsUnchangedDropsRemovedWarmsNew(t *testing.T) {
	r := startReloadRig(t, map[string]string{"keep": keyProfile, "gone": keyProfile, "swap": keyProfile})
	for _, p := range []string{"keep", "gone", "swap"} {
		r.waitHealthy(t, p)
	}
	keepID, swapID := r.keyID(t, "keep"), r.keyID(t, "swap")
	goneToken := r.clientToken(t, "gone")
	mints := totalMints(r.emu)

	// gone is removed, fresh is added, swap now mints as another principal.
	r.write(t, map[string]string{"keep": keyProfile, "swap": otherProfile, "fresh": keyProfile})
	out := r.reload(t)
	if out["event"] != "reloaded" {
		t.Fatalf("reload outcome %v", out)
	}
	if !slices.Equal(strs(out["kept"]), []string{"keep"}) || !slices.Equal(strs(out["added"]), []string{"fresh"}) ||
		!slices.Equal(strs(out["replaced"]), []string{"swap"}) || !slices.Equal(strs(out["removed"]), []string{"gone"}) {
		t.Errorf("reload log line = %v", out)
	}
	fresh := r.waitHealthy(t, "fresh") // warmed by the refresh loop, before any client asked
	swap := r.waitHealthy(t, "swap")
	if got := r.keyID(t, "keep"); got != keepID {
		t.Errorf("keep's key changed across the reload: %s -> %s", keepID, got)
	}
	if swap["accessKeyId"] == swapID || swap["principal"] != "coreweave/u-other" {
		t.Errorf("swap after its token file changed: %v (old key %s)", swap, swapID)
	}
	if got := totalMints(r.emu) - mints; got != 2 {
		t.Errorf("the reload caused %d mints, want 2 (fresh and swap; keep kept its key)", got)
	}
	if code, body := r.get(t, "gone", goneToken); code != http.StatusNotFound {
		t.Errorf("removed profile: GET = %d %v, want 404", code, body)
	}
	if _, ok := r.status(t)["gone"]; ok {
		t.Error("removed profile still in /v1/profiles")
	}
	if r.keyID(t, "fresh") != fresh["accessKeyId"] {
		t.Errorf("fresh serves another key than its status reports: %v", fresh)
	}
}

func TestReloadRejectsInvalidConfigAndKeepsRunning(t *testing.T) {
	r := startReloadRig(t, map[string]string{"keep": keyProfile})
	r.waitHealthy(t, "keep")
	keepID := r.keyID(t, "keep")

	cases := []struct {
		name     string
		profiles map[string]string
		extra    []string
		wantLog  string
	}{
		{"invalid duration", map[string]string{"keep": keyProfile, "bad": "SOURCE=oidc\nTOKEN_FILE=api-token\nORG_ID=cw123\nDURATION=forever"},
			nil, "CWCREDS_PROFILE_BAD_DURATION"},
		{"restart-only setting", map[string]string{"keep": keyProfile, "late": keyProfile},
			[]string{"CWCREDS_LISTEN_ADDR=127.0.0.1:1"}, "CWCREDS_LISTEN_ADDR"},
		{"unknown variable", map[string]string{"keep": keyProfile},
			[]string{"CWCREDS_PROFILE_KEEP_DURATON=1h"}, "CWCREDS_PROFILE_KEEP_DURATON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r.write(t, tc.profiles, tc.extra...)
			out := r.reload(t)
			if out["event"] != "reload_rejected" || out["level"] != "error" {
				t.Fatalf("reload outcome %v, want an error-level reload_rejected", out)
			}
			if msg, _ := out["error"].(string); !strings.Contains(msg, tc.wantLog) {
				t.Errorf("rejection says %q; want it to name %s", msg, tc.wantLog)
			}
			if got := r.keyID(t, "keep"); got != keepID {
				t.Errorf("keep's key changed after a rejected reload: %s -> %s", keepID, got)
			}
			if st := r.status(t); len(st) != 1 {
				t.Errorf("profiles after a rejected reload: %v", st)
			}
			// The env file never reaches the process environment.
			if got, set := os.LookupEnv("CWCREDS_PROFILES"); set {
				t.Errorf("CWCREDS_PROFILES = %q in the process environment after a reload, want it unset", got)
			}
		})
	}

	// A valid file afterwards applies as usual.
	r.write(t, map[string]string{"keep": keyProfile, "late": keyProfile})
	if out := r.reload(t); out["event"] != "reloaded" {
		t.Fatalf("reload after rejections: %v", out)
	}
	r.waitHealthy(t, "late")
}

func TestReloadClientTokenChangeKeepsKey(t *testing.T) {
	r := startReloadRig(t, map[string]string{"keep": keyProfile})
	r.waitHealthy(t, "keep")
	oldToken := r.clientToken(t, "keep")
	keepID := r.keyID(t, "keep")

	newTokenFile := filepath.Join(r.dataDir, "keep-client.token")
	r.write(t, map[string]string{"keep": keyProfile + "\nCLIENT_TOKEN_FILE=" + newTokenFile})
	if out := r.reload(t); out["event"] != "reloaded" || !slices.Equal(strs(out["kept"]), []string{"keep"}) {
		t.Fatalf("reload outcome %v", out)
	}
	newToken := readTrimmed(t, newTokenFile)
	if code, _ := r.get(t, "keep", oldToken); code != http.StatusUnauthorized {
		t.Errorf("old client token after the reload: %d, want 401", code)
	}
	code, body := r.get(t, "keep", newToken)
	if code != http.StatusOK || body["AccessKeyId"] != keepID {
		t.Errorf("new client token: %d %v; want 200 with the same key %s", code, body, keepID)
	}
}

// Without CWCREDS_ENV_FILE a SIGHUP only checks the token files again.
func TestSIGHUPWithoutEnvFileChecksTokenFiles(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("CW-SECRET-loose\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cfg := &config.Config{Profiles: []config.Profile{{Name: "a", TokenFile: loose}}}
	n := &node{log: zerolog.New(&logs), cfg: cfg}
	n.reload(nil)
	out := logs.String()
	if !strings.Contains(out, "configuration not reloaded") || !strings.Contains(out, "CWCREDS_ENV_FILE") {
		t.Errorf("no log line saying why nothing was reloaded:\n%s", out)
	}
	if !strings.Contains(out, "token file not usable") || !strings.Contains(out, loose) {
		t.Errorf("the group/world-readable token file was not reported:\n%s", out)
	}
	if strings.Contains(out, "CW-SECRET-loose") {
		t.Error("the token leaked into the log")
	}
	if n.cfg != cfg {
		t.Error("the configuration changed")
	}
}

// A reload that adds the first restricted profile also turns on the audit
// line's peer uid, as if the profile had been configured at start.
func TestReloadAddingFirstRestrictedProfileAuditsPeerUID(t *testing.T) {
	r := startReloadRig(t, map[string]string{"open": keyProfile})
	r.waitHealthy(t, "open")
	me := os.Getuid()
	r.write(t, map[string]string{"open": keyProfile,
		"theirs": keyProfile + fmt.Sprintf("\nALLOWED_UIDS=%d", me+1)})
	if out := r.reload(t); out["event"] != "reloaded" {
		t.Fatalf("reload outcome %v", out)
	}
	if code, body := r.get(t, "theirs", r.clientToken(t, "theirs")); code != http.StatusForbidden {
		t.Fatalf("GET theirs = %d %v, want 403", code, body)
	}
	var audit map[string]any
	for line := range strings.Lines(r.logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["event"] == "credential_refusal" && m["profile"] == "theirs" {
			audit = m
		}
	}
	if audit == nil || audit["outcome"] != "forbidden" || audit["peer_uid"] != float64(me) {
		t.Errorf("after the reload, the forbidden audit line %v lacks the peer's uid %d", audit, me)
	}
}

// A reload that removes a profile deletes its metric series: no series
// names a profile the daemon no longer has.
func TestReloadDeletesRemovedProfilesMetrics(t *testing.T) {
	r := startReloadRig(t, map[string]string{"keep": keyProfile, "gone": keyProfile})
	r.waitHealthy(t, "gone")
	r.keyID(t, "gone")
	r.keyID(t, "keep")
	if _, body := r.fetch(t, "/metrics"); !strings.Contains(body, `profile="gone"`) {
		t.Fatalf("no series for profile gone before the reload:\n%s", body)
	}
	r.write(t, map[string]string{"keep": keyProfile})
	if out := r.reload(t); out["event"] != "reloaded" {
		t.Fatalf("reload outcome %v", out)
	}
	_, body := r.fetch(t, "/metrics")
	for line := range strings.Lines(body) {
		if strings.Contains(line, `profile="gone"`) {
			t.Errorf("removed profile's series still exported: %s", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(body, `profile="keep"`) {
		t.Error("the kept profile's series disappeared")
	}
}
