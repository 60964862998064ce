package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// warm fetches every profile's key once, so each holds one.
func (d *daemon) warm(t *testing.T) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, p := range d.cfg.Profiles {
		code, body := d.get(t, p.Name, d.tokens[p.Name])
		if code != http.StatusOK {
			t.Fatalf("GET %s = %d %v", p.Name, code, body)
		}
		ids[p.Name] = body["AccessKeyId"].(string)
	}
	return ids
}

func (d *daemon) fetch(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + d.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsEndpointPassesPromtool lints the daemon's real /metrics output
// after traffic on every profile.
func TestMetricsEndpointPassesPromtool(t *testing.T) {
	d := startDaemon(t)
	d.warm(t)
	d.get(t, "train", "wrong-token")
	d.get(t, "no-such-profile", "x")
	code, out := d.fetch(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", code, out)
	}
	for _, want := range []string{
		`cwcreds_build_info{goversion="go`,
		`cwcreds_credential_requests_total{outcome="ok",profile="train"} 1`,
		`cwcreds_credential_requests_total{outcome="unauthorized",profile="train"} 1`,
		`cwcreds_credential_requests_total{outcome="unknown_profile",profile="_unknown"} 1`,
		`cwcreds_mints_total{profile="sso",result="ok"} 1`,
		`cwcreds_upstream_requests_total{endpoint="/v1/cwobject/temporary-credentials/oidc",outcome="ok"} 1`,
		`cwcreds_upstream_request_duration_seconds_bucket{endpoint="/v1/cwobject/access-key",le="+Inf"} 1`,
		`cwcreds_profile_healthy{profile="wif"} 1`,
		`cwcreds_key_expiry_seconds{profile="train"} 71`, // 2h keys: 71xx seconds left
		"go_goroutines ", "process_open_fds ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, secret := range append([]string{"no-such-profile", "wrong-token"}, valuesOf(d.tokens)...) {
		if strings.Contains(out, secret) {
			t.Errorf("/metrics holds %q", secret)
		}
	}
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found in PATH: install it (Debian: apt-get install -y --no-install-recommends prometheus) to lint /metrics")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, msg)
	}
}

func valuesOf(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestReadyzThroughDaemon(t *testing.T) {
	d := startDaemon(t, func(emu *cwapitest.Emulator) {
		emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointSAML, Status: 401, Message: "assertion rejected"})
	})
	for _, p := range []string{"train", "fast-exchange", "wif"} {
		d.get(t, p, d.tokens[p])
	}
	d.get(t, "sso", d.tokens["sso"]) // fails: upstream refuses
	code, body := d.fetch(t, "/readyz")
	var got struct {
		Ready    bool `json:"ready"`
		NotReady []struct{ Profile, Reason string }
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable || got.Ready || len(got.NotReady) != 1 || got.NotReady[0].Profile != "sso" ||
		!strings.Contains(got.NotReady[0].Reason, "HTTP 401") || strings.Contains(got.NotReady[0].Reason, "assertion rejected") {
		t.Errorf("GET /readyz = %d %s; want 503 naming sso and the refusal's class, never upstream's words", code, body)
	}
}

func TestStatusCommand(t *testing.T) {
	d := startDaemon(t)
	ids := d.warm(t)
	useDaemonAddr(t, d)

	stdout, stderr, err := runClient(t, "status")
	if err != nil {
		t.Fatalf("status = %v (stderr %s)", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "PROFILE") {
		t.Fatalf("status table:\n%s\nwant a header and 4 rows", stdout)
	}
	for _, p := range d.cfg.Profiles {
		row := ""
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, p.Name+" ") {
				row = l
			}
		}
		id := ids[p.Name]
		if !strings.Contains(row, " ok ") || !strings.Contains(row, "…"+id[len(id)-4:]) || strings.Contains(row, id) {
			t.Errorf("row for %s = %q; want state ok and the key id suffix only", p.Name, row)
		}
	}
	for _, secret := range valuesOf(d.tokens) {
		if strings.Contains(stdout, secret) {
			t.Errorf("status printed a client token")
		}
	}

	stdout, _, err = runClient(t, "status", "--json")
	var body struct{ Profiles []broker.Status }
	if err != nil || json.Unmarshal([]byte(stdout), &body) != nil || len(body.Profiles) != 4 {
		t.Errorf("status --json = %v\n%s", err, stdout)
	}

	// Unreachable: exit 1 with a clear message.
	_, _, err = runClient(t, "status", "--addr", "127.0.0.1:1")
	var ue *usageError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "cannot reach the cwcreds daemon at 127.0.0.1:1") {
		t.Errorf("status against nothing = %v, want an unreachable error (exit 1)", err)
	}
}

func TestStatusCommandUnhealthy(t *testing.T) {
	d := startDaemon(t, func(emu *cwapitest.Emulator) {
		emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointOIDC, Status: 403, Message: "issuer not trusted"})
	})
	for _, p := range d.cfg.Profiles {
		d.get(t, p.Name, d.tokens[p.Name])
	}
	useDaemonAddr(t, d)
	stdout, _, err := runClient(t, "status")
	var ue *usageError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "1 of 4 profiles unhealthy") || !strings.Contains(err.Error(), "wif") {
		t.Errorf("status = %v, want exit 1 naming wif", err)
	}
	if !strings.Contains(stdout, "UNHEALTHY") || !strings.Contains(stdout, "wif: ") ||
		!strings.Contains(stdout, "HTTP 403 (PERMISSION_DENIED)") || strings.Contains(stdout, "issuer not trusted") {
		t.Errorf("status table does not show why wif is unhealthy:\n%s", stdout)
	}
}

func TestStatusWithoutProfileConfiguration(t *testing.T) {
	d := startDaemon(t)
	// An operator's shell: only the listen address, no profiles.
	clearEnv(t, "CWCREDS_")
	t.Setenv("CWCREDS_LISTEN_ADDR", d.addr)
	d.warm(t)
	if _, stderr, err := runClient(t, "status"); err != nil {
		t.Errorf("status without profile configuration = %v (%s)", err, stderr)
	}
}

func TestRevokeCommand(t *testing.T) {
	d := startDaemon(t)
	ids := d.warm(t)
	useDaemonAddr(t, d)
	apiTokenFile := filepath.Join(d.dataDir, "credentials", "api-token")
	status := func(id string) string {
		k, ok := d.emu.Key(id)
		if !ok {
			return "unknown"
		}
		return k.Status
	}

	stdout, stderr, err := runClient(t, "revoke", "--profile", "train")
	if err != nil {
		t.Fatalf("revoke --profile train = %v\n%s%s", err, stdout, stderr)
	}
	_, body := d.get(t, "train", d.tokens["train"])
	newID := body["AccessKeyId"].(string)
	if !strings.Contains(stdout, "train: revoked key "+ids["train"]) || !strings.Contains(stdout, "now serving new key "+newID) {
		t.Errorf("revoke printed:\n%s\nwant the revoked key %s and the new key %s", stdout, ids["train"], newID)
	}
	if got := status(ids["train"]); got != cwapitest.StatusDeleted {
		t.Errorf("revoked key upstream status = %s, want %s", got, cwapitest.StatusDeleted)
	}

	// oidc holds no API token: refused, key kept, unless one is given.
	stdout, _, err = runClient(t, "revoke", "--profile", "wif")
	if err == nil || !strings.Contains(stdout, "RevokeTokenRequired") || status(ids["wif"]) != cwapitest.StatusActive {
		t.Errorf("revoke wif without a token = %v\n%s\nwant refused, key kept", err, stdout)
	}
	if stdout, _, err = runClient(t, "revoke", "--profile", "wif", "--token-file", apiTokenFile); err != nil || status(ids["wif"]) != cwapitest.StatusDeleted {
		t.Errorf("revoke wif --token-file = %v\n%s", err, stdout)
	}

	// --all-cached: every profile holding a key.
	before := d.warm(t)
	stdout, _, err = runClient(t, "revoke", "--all-cached", "--token-file", apiTokenFile)
	if err != nil {
		t.Fatalf("revoke --all-cached = %v\n%s", err, stdout)
	}
	for name, id := range before {
		if status(id) != cwapitest.StatusDeleted || !strings.Contains(stdout, name+": revoked key "+id) {
			t.Errorf("after --all-cached %s's key %s is %s; output:\n%s", name, id, status(id), stdout)
		}
	}
	if strings.Contains(d.logs.String(), "CW-SECRET") {
		t.Errorf("daemon logs hold an API token")
	}

	// Refusals.
	wrong := filepath.Join(t.TempDir(), "admin")
	os.WriteFile(wrong, []byte("not-the-admin-token"), 0o600)
	if _, _, err := runClient(t, "revoke", "--profile", "train", "--admin-token-file", wrong); err == nil {
		t.Errorf("revoke with a wrong admin token succeeded")
	}
	for _, args := range [][]string{{"revoke"}, {"revoke", "--profile", "train", "--all-cached"}} {
		var ue *usageError
		if _, _, err := runClient(t, args...); !errors.As(err, &ue) {
			t.Errorf("%q = %v, want a usage error", args, err)
		}
	}
}

func TestAdminTokenFile(t *testing.T) {
	d := startDaemon(t)
	path := adminTokenPath(d.cfg.RuntimeDir)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("admin token mode = %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if len(b) != 64 || bytes.ContainsAny(b, "\n") {
		t.Errorf("admin token = %d bytes, want 64 hex characters", len(b))
	}
	for _, tok := range d.tokens {
		if tok == string(b) {
			t.Errorf("admin token equals a client token")
		}
	}
}

// TestAuditFlushedAtShutdown: the daemon's audit trail accounts for every
// request once serve returns: the counts of a (key, peer)'s grant and
// summary lines, and of a refused (profile, peer, reason)'s lines, add up
// to the requests, the pending ones flushed at shutdown; one grant line per
// (key, peer), not one line per request.
func TestAuditFlushedAtShutdown(t *testing.T) {
	d := startDaemon(t)
	const served, refused = 200, 50
	for range served {
		if code, body := d.get(t, "train", d.tokens["train"]); code != http.StatusOK {
			t.Fatalf("GET train = %d %v", code, body)
		}
	}
	for range refused {
		d.get(t, "train", "wrong-token")
	}
	d.stop()
	d.stop = nil
	counts, lines := map[string]int{}, map[string]int{}
	for l := range strings.Lines(d.logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["audit"] != true || m["profile"] != "train" {
			continue
		}
		ev, _ := m["event"].(string)
		if !strings.HasPrefix(ev, "credential_") {
			continue
		}
		if m["peer"] == nil || m["peer"] == "" {
			t.Errorf("audit line without a peer: %s", l)
		}
		n, _ := m["count"].(float64)
		counts[ev] += int(n)
		lines[ev]++
	}
	if counts["credential_grant"]+counts["credential_grant_summary"] != served || lines["credential_grant"] != 1 {
		t.Errorf("grant lines %v, counts %v; want 1 grant line and counts adding up to %d", lines, counts, served)
	}
	if counts["credential_refusal"]+counts["credential_refusal_summary"] != refused || lines["credential_refusal"] != 1 {
		t.Errorf("refusal lines %v, counts %v; want 1 refusal line and counts adding up to %d", lines, counts, refused)
	}
}
