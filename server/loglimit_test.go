package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// warnLines returns the lines of logs above debug, decoded.
func warnLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["level"] != "debug" {
			out = append(out, m)
		}
	}
	return out
}

// TestRefusalFloodLogBounded: any local user could make the daemon write
// one warn line per refused request: ~30,000 lines a second (a Host it
// refuses, a proxy header, a wrong IMDS token), over 100 MiB/s with a 16
// KiB Host. journald drops all of a service's lines past 10,000 in 30 s,
// so a second of this silenced the audit trail for the rest of each
// window. Now such lines are bounded (refusalLinesBurst, then
// refusalLinesPerSec), the next line written says how many were dropped,
// and request-supplied fields are clipped; every refusal is still answered.
func TestRefusalFloodLogBounded(t *testing.T) {
	s, logs := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) { o.IMDSProfile = testProfile })
	now := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }

	base := len(warnLines(t, logs.String())) // lines of the set-up (the IMDS warning)
	bigHost := "evil" + strings.Repeat("a", 12<<10)
	floods := []func() *http.Request{
		func() *http.Request { r := credsRequest(testProfile, testToken); r.Host = bigHost; return r },
		func() *http.Request { return request(http.MethodGet, "/v1/profiles", "X-Forwarded-For", "10.0.0.1") },
		func() *http.Request { return request(http.MethodGet, imdsCredsPath+"/", hdrIMDSToken, "guess") },
	}
	const perKind = 3000
	for _, mk := range floods {
		for range perKind {
			if rec := serve(s, mk()); rec.Code != http.StatusForbidden && rec.Code != http.StatusUnauthorized {
				t.Fatalf("refused request answered %d", rec.Code)
			}
		}
	}
	lines := warnLines(t, logs.String())[base:]
	if len(lines) > refusalLinesBurst {
		t.Fatalf("%d refused requests wrote %d lines above debug; want at most %d", 3*perKind, len(lines), refusalLinesBurst)
	}
	for _, l := range lines {
		if h, _ := l["host"].(string); len(h) > maxLoggedField+len("…") {
			t.Fatalf("a logged Host is %d bytes; want it clipped to %d", len(h), maxLoggedField)
		}
	}

	// A second later the next refusal is logged, with the count dropped.
	now = now.Add(time.Second)
	before := len(lines)
	serve(s, request(http.MethodGet, "/v1/profiles", "Via", "1.1 proxy"))
	lines = warnLines(t, logs.String())[base:]
	if len(lines) != before+1 {
		t.Fatalf("after a second: %d new lines, want 1", len(lines)-before)
	}
	want := float64(3*perKind - before)
	if got := lines[len(lines)-1]["lines_suppressed"]; got != want {
		t.Errorf("lines_suppressed = %v, want %v", got, want)
	}
}
