package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
)

// auditServer returns a server logging at info, as the daemon does by
// default, with RunAudit running until the returned stop, which waits for
// its final flush. Call it inside a synctest bubble.
func auditServer(t *testing.T, keys KeyGetter, opts ...func(*Options)) (s *Server, logs *syncBuffer, stop func()) {
	t.Helper()
	logs = &syncBuffer{}
	o := Options{ClientTokens: map[string]string{testProfile: testToken}}
	for _, fn := range opts {
		fn(&o)
	}
	s = New(zerolog.New(logs).Level(zerolog.InfoLevel), keys, o)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.RunAudit(ctx); close(done) }()
	return s, logs, func() { cancel(); <-done }
}

// fromUID returns r as if its connection's peer were uid, as
// LimitConnections attaches it.
func fromUID(r *http.Request, uid uint32) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), connPeerKey{}, peerKey{uid: uid, hasUID: true}))
}

// logLines parses every line of logs.
func logLines(t *testing.T, logs *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.Lines(logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// auditCounts returns, per event, the lines and the sum of their counts
// for the lines matching match.
func auditCounts(lines []map[string]any, match func(map[string]any) bool) (n, sum map[string]int) {
	n, sum = map[string]int{}, map[string]int{}
	for _, l := range lines {
		if l["audit"] != true || !match(l) {
			continue
		}
		ev, _ := l["event"].(string)
		c, _ := l["count"].(float64)
		n[ev]++
		sum[ev] += int(c)
	}
	return n, sum
}

func peerIs(p string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["peer"] == p }
}

// TestAuditGrants: 10,000 requests of one peer log one grant line and
// summaries whose counts add up to the rest, at most one per interval; a
// new peer and a new key each get their own grant line; nothing is lost
// at shutdown.
func TestAuditGrants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := &fakeKeys{creds: testCreds()}
		s, logs, stop := auditServer(t, keys)
		start := time.Now()
		for i := range 10_000 {
			if i == 4_000 || i == 9_000 {
				time.Sleep(AuditInterval) // one summary per interval
				synctest.Wait()
			}
			if rec := serve(s, fromUID(credsRequest(testProfile, testToken), 1000)); rec.Code != http.StatusOK {
				t.Fatalf("request %d: %d", i, rec.Code)
			}
		}
		serve(s, fromUID(credsRequest(testProfile, testToken), 1001)) // a new peer
		next := testCreds()
		next.AccessKeyID = "CWAKIDEXAMPLE0002"
		keys.set(next, nil)
		for range 5 {
			serve(s, fromUID(credsRequest(testProfile, testToken), 1000)) // a new key
		}
		stop() // pending counts flushed

		lines := logLines(t, logs)
		if len(lines) != 7 {
			t.Errorf("%d log lines, want 7 (3 grants, 4 summaries):\n%s", len(lines), logs)
		}
		key1 := func(l map[string]any) bool { return l["peer"] == "uid 1000" && l["key_id_suffix"] == "0001" }
		n, sum := auditCounts(lines, key1)
		if n["credential_grant"] != 1 || n["credential_grant_summary"] != 3 || sum["credential_grant"]+sum["credential_grant_summary"] != 10_000 {
			t.Errorf("uid 1000, key 0001: lines %v, counts %v; want 1 grant and 3 summaries counting 10000 in all", n, sum)
		}
		var got []int
		for _, l := range lines {
			if key1(l) {
				got = append(got, int(l["count"].(float64)))
				if l["event"] == "credential_grant" && l["at"] != start.UTC().Format(time.RFC3339) {
					t.Errorf("grant line at %v, want %v", l["at"], start)
				}
			}
		}
		if want := []int{1, 3_999, 5_000, 1_000}; !equalInts(got, want) {
			t.Errorf("counts of uid 1000, key 0001 in order = %v, want %v", got, want)
		}
		if n, sum := auditCounts(lines, peerIs("uid 1001")); n["credential_grant"] != 1 || sum["credential_grant"] != 1 || len(n) != 1 {
			t.Errorf("new peer: lines %v, counts %v; want its own grant line", n, sum)
		}
		key2 := func(l map[string]any) bool { return l["peer"] == "uid 1000" && l["key_id_suffix"] == "0002" }
		if n, sum := auditCounts(lines, key2); n["credential_grant"] != 1 || sum["credential_grant"]+sum["credential_grant_summary"] != 5 {
			t.Errorf("new key: lines %v, counts %v; want its own grant line and 5 in all", n, sum)
		}
		for _, l := range lines {
			if l["level"] != "info" || l["profile"] != testProfile || l["peer_uid"] == nil {
				t.Errorf("audit line %v: want info, the profile and the peer's uid", l)
			}
			if strings.Contains(l["event"].(string), "summary") && (l["since"] == nil || l["until"] == nil) {
				t.Errorf("summary line %v lacks its period", l)
			}
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAuditRefusedFlood: a flood of bad tokens and unknown profiles logs
// summaries only: one line per (profile, peer, reason) per interval, never
// one per request; metrics still count each.
func TestAuditRefusedFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reqs := &countingRequests{}
		s, logs, stop := auditServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) { o.Requests = reqs })
		for i := range 10_000 {
			if i == 5_000 {
				time.Sleep(AuditInterval)
				synctest.Wait()
			}
			serve(s, fromUID(credsRequest(testProfile, "bad-token"), 1000))
			serve(s, fromUID(credsRequest("nope", testToken), 1000))
		}
		stop()
		lines := logLines(t, logs)
		if len(lines) != 6 {
			t.Errorf("%d log lines for 20,000 refusals, want 6 (2 first lines, 4 summaries):\n%s", len(lines), logs)
		}
		for _, tc := range []struct{ outcome, level string }{{"unauthorized", "warn"}, {"unknown_profile", "info"}} {
			n, sum := auditCounts(lines, func(l map[string]any) bool { return l["outcome"] == tc.outcome })
			if n["credential_refusal"] != 1 || n["credential_refusal_summary"] != 2 || sum["credential_refusal"]+sum["credential_refusal_summary"] != 10_000 {
				t.Errorf("%s: lines %v, counts %v; want 1 refusal and 2 summaries counting 10000", tc.outcome, n, sum)
			}
			for _, l := range lines {
				if l["outcome"] == tc.outcome && (l["level"] != tc.level || l["peer"] != "uid 1000" || l["reason"] == nil) {
					t.Errorf("line %v: want level %s, the peer and the reason", l, tc.level)
				}
			}
		}
		if reqs.counts["default/unauthorized"] != 10_000 || reqs.counts["/unknown_profile"] != 10_000 {
			t.Errorf("metrics counts = %v, want every request", reqs.counts)
		}
		if strings.Contains(logs.String(), "bad-token") || strings.Contains(logs.String(), "nope") {
			t.Errorf("request input logged: %s", logs)
		}
	})
}

// TestAuditOverflow: past the pair cap, new pairs are served and counted
// in one overflow line when it happens and one count per interval; the
// tracked pairs keep their lines.
func TestAuditOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, logs, stop := auditServer(t, &fakeKeys{creds: testCreds()})
		s.audit.max = 2
		for uid := range uint32(5) {
			for range 10 {
				if rec := serve(s, fromUID(credsRequest(testProfile, testToken), uid)); rec.Code != http.StatusOK {
					t.Fatalf("uid %d: %d", uid, rec.Code)
				}
			}
		}
		stop()
		lines := logLines(t, logs)
		n, sum := auditCounts(lines, func(map[string]any) bool { return true })
		if n["credential_grant"] != 2 || n["credential_grant_summary"] != 2 || n["audit_overflow"] != 2 {
			t.Errorf("lines %v, want 2 grants, 2 summaries and 2 overflow lines (when and how many):\n%s", n, logs)
		}
		if got := sum["credential_grant"] + sum["credential_grant_summary"] + sum["audit_overflow"]; got != 50 {
			t.Errorf("counts add up to %d, want all 50 requests (%v)", got, sum)
		}
		if sum["audit_overflow"] != 30 {
			t.Errorf("overflow count %d, want 30", sum["audit_overflow"])
		}
	})
}

// TestAuditForget: a pair idle for auditForget intervals is forgotten, so
// the table stays bounded by recent pairs; its next request logs a grant
// line again.
func TestAuditForget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, logs, stop := auditServer(t, &fakeKeys{creds: testCreds()})
		serve(s, fromUID(credsRequest(testProfile, testToken), 7))
		time.Sleep(auditForget*AuditInterval + time.Second)
		synctest.Wait()
		if n := len(*s.audit.pairs.Load()); n != 0 {
			t.Errorf("%d pairs tracked after %d idle intervals, want 0", n, auditForget)
		}
		serve(s, fromUID(credsRequest(testProfile, testToken), 7))
		stop()
		if n, _ := auditCounts(logLines(t, logs), peerIs("uid 7")); n["credential_grant"] != 2 || len(n) != 1 {
			t.Errorf("lines %v, want 2 grant lines", n)
		}
	})
}

// TestHandlerHitAllocsAudit: with the audit trail on (info), a cache hit
// of a tracked pair allocates nothing.
func TestHandlerHitAllocsAudit(t *testing.T) {
	s := New(zerolog.New(io.Discard).Level(zerolog.InfoLevel).With().Timestamp().Logger(),
		&fakeKeys{creds: testCreds()}, Options{ClientTokens: map[string]string{testProfile: testToken}})
	// The first request of each is the grant.
	assertHitsAllocNothing(t, s, "cache hit with audit on", true,
		credsRequest(testProfile, testToken), fromUID(credsRequest(testProfile, testToken), 1000))
}
