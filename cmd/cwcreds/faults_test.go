package main

// Upstream fault tolerance at the daemon level: the real cwapi.Client,
// minters, broker.Cache with Run and server.Server (client tokens, guards,
// handlers) against the real emulator and its fault injection. Most tests
// run in a testing/synctest bubble (see faults_helpers_test.go), so a key's
// whole lifetime passes in milliseconds and every timing is exact; one runs
// the real serve over loopback sockets. Every number asserted is derived
// from the broker's policy constants.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// serveMarginFor mirrors the broker's serve margin for a key lifetime.
func serveMarginFor(lifetime time.Duration) time.Duration {
	return min(broker.ServeMargin, time.Duration(float64(lifetime)*broker.ServeMarginFraction))
}

// earliestRefresh is the earliest the broker refreshes a key of lifetime
// minted at t0: RefreshAfter of the lifetime, less at most RefreshJitter.
func earliestRefresh(t0 time.Time, lifetime time.Duration) time.Time {
	return t0.Add(time.Duration(float64(lifetime) * (broker.RefreshAfter - broker.RefreshJitter)))
}

// httpTimeout is the overall timeout of the broker's upstream HTTP client.
var httpTimeout = cwapi.NewHTTPClient().Timeout

// warmUp waits for the cache's start-up mint of profile and returns its
// key as a client gets it.
func (r *rig) warmUp(profile string) clientReply {
	r.t.Helper()
	synctest.Wait()
	rep := r.get(profile, 0)
	if rep.Status != http.StatusOK {
		r.t.Fatalf("warm-up: GET %s = %d %s", profile, rep.Status, rep.Raw)
	}
	return rep
}

// TestFaultOutageForMostOfKeyLifetime: upstream refuses connections from
// just before the first refresh until shortly before the key's serve
// margin ends. Clients polling every 5 s never fail; refresh attempts back
// off per policy; after recovery a fresh key is served within one backoff
// step.
func TestFaultOutageForMostOfKeyLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lifetime, poll = time.Hour, 5 * time.Second
		r := newRig(t, nil, rigProfile{name: "train", source: cwapi.SourceAccessKey, duration: lifetime})
		t0 := time.Now()
		k1 := r.warmUp("train").KeyID

		serveUntil := t0.Add(lifetime - serveMarginFor(lifetime))
		outageStart := earliestRefresh(t0, lifetime).Add(-2 * time.Minute)
		// Late enough that the key is nearly unservable, early enough that
		// one full backoff step still fits before it is.
		recovery := serveUntil.Add(-broker.BackoffMax - 30*time.Second)
		end := serveUntil.Add(5 * time.Minute)
		var replies []clientReply
		var midOutage broker.Status
		var pages strings.Builder
		for at := t0.Add(poll); !at.After(end); at = at.Add(poll) {
			sleepUntil(at)
			r.up.down.Store(!at.Before(outageStart) && at.Before(recovery))
			replies = append(replies, r.get("train", 0))
			if at.Equal(recovery.Add(-5 * time.Minute)) {
				var page string
				midOutage, page = r.status("train")
				pages.WriteString(page)
			}
		}

		// Zero failed client requests, one key switch.
		var k2 string
		var firstK2 time.Time
		failed := 0
		for _, rep := range replies {
			switch {
			case rep.Status != http.StatusOK:
				failed++
				t.Errorf("client request at %s failed: %d %s", r.since(rep.At), rep.Status, rep.Raw)
			case rep.KeyID == k1:
				if k2 != "" {
					t.Errorf("at %s the old key %s was served again after %s", r.since(rep.At), k1, k2)
				}
			case k2 == "":
				k2, firstK2 = rep.KeyID, rep.At
			case rep.KeyID != k2:
				t.Errorf("at %s a third key %s was served", r.since(rep.At), rep.KeyID)
			}
		}

		calls := r.up.callsTo(cwapi.PathAccessKey)
		if len(calls) < 3 || calls[0].Status != http.StatusOK || calls[len(calls)-1].Status != http.StatusOK {
			t.Fatalf("upstream calls: want a success, failures, a success; got %s", describeCalls(calls))
		}
		failures := calls[1 : len(calls)-1]
		success := calls[len(calls)-1]
		for _, c := range failures {
			if !c.Down || !strings.Contains(c.Err, "connection refused") {
				t.Errorf("call at %s during the outage was not refused: %+v", r.since(c.Start), c)
			}
		}
		if f := failures[0].Start; f.Before(earliestRefresh(t0, lifetime)) || f.After(t0.Add(time.Duration(float64(lifetime)*broker.RefreshAfter))) {
			t.Errorf("first refresh attempt at %s, want between %s and %s (RefreshAfter less jitter)",
				r.since(f), r.since(earliestRefresh(t0, lifetime)), time.Duration(float64(lifetime)*broker.RefreshAfter))
		}
		checkBackoffSpacing(t, "outage", calls[1:], 1, broker.BackoffInitial, broker.BackoffMax)
		lo, hi := attemptBounds(recovery.Sub(failures[0].Start), 0, broker.BackoffInitial, broker.BackoffMax)
		if n := len(failures); n < lo || n > hi {
			t.Errorf("%d attempts during the outage, want %d to %d for its %s", n, lo, hi, recovery.Sub(failures[0].Start))
		}
		step := backoffStep(broker.BackoffInitial, broker.BackoffMax, len(failures))
		if d := success.Start.Sub(recovery); d < 0 || d >= step || d > broker.BackoffMax {
			t.Errorf("first call after recovery %s after it; want within one backoff step (%s)", d, step)
		}
		if k2 == "" || k2 == k1 {
			t.Fatalf("no fresh key served after recovery (served %q)", k2)
		}
		if d := firstK2.Sub(success.Start); d < keyWarmup || d > keyWarmup+poll {
			t.Errorf("fresh key first served %s after it was minted, want at the first poll after its %s warm-up", d, keyWarmup)
		}
		if !success.Start.Before(serveUntil) {
			t.Errorf("fresh key minted at %s, after the old one stopped being servable at %s", r.since(success.Start), r.since(serveUntil))
		}
		t.Logf("outage %s–%s: %d refused attempts (policy allows %d–%d), recovered %s after, %d client requests all served",
			r.since(outageStart), r.since(recovery), len(failures), lo, hi, success.Start.Sub(recovery), len(replies))

		// The status page said the old key was still being served while refreshes failed.
		if !midOutage.Healthy || midOutage.AccessKeyID != k1 || midOutage.ConsecutiveFailures < 1 ||
			!strings.Contains(midOutage.LastError, "connection refused") || midOutage.NextAttempt == nil || midOutage.Reason != "" {
			t.Errorf("status during the outage = %+v; want healthy with the old key, failures, the refused connection and the next attempt", midOutage)
		}
		if st, page := r.status("train"); !st.Healthy || st.AccessKeyID != k2 || st.ConsecutiveFailures != 0 || st.NextAttempt != nil {
			t.Errorf("status after recovery = %+v; want healthy with the fresh key", st)
		} else {
			pages.WriteString(page)
		}

		// Each failure logged once, at warn (transient), saying the old key is still served.
		fails := r.events("mint_failed", "train")
		if len(fails) != len(failures) {
			t.Errorf("%d mint_failed log lines, want one per failed attempt (%d)", len(fails), len(failures))
		}
		for _, l := range fails {
			if l.str("level") != "warn" || l["serving_previous_key"] != true || !strings.Contains(l.str("error"), "connection refused") {
				t.Errorf("mint_failed line = %v; want warn, serving_previous_key, the refused connection", l)
				break
			}
		}
		if n := len(r.events("key_minted", "train")); n != 2 {
			t.Errorf("%d key_minted lines, want 2", n)
		}
		for _, l := range r.logLines() {
			if l.str("level") == "error" {
				t.Errorf("error-level line during a transient outage: %v", l)
			}
		}
		if st := r.emu.Stats(); st.Mints[cwapitest.EndpointAccessKey] != 2 {
			t.Errorf("emulator minted %d keys, want 2", st.Mints[cwapitest.EndpointAccessKey])
		}
		r.checkClean(pages.String(), nil)
	})
}

// TestFaultRetryAfterHonoured: a 429 with Retry-After silences the profile
// for that long (plus at most RetryAfterJitter), whether it is warm (its
// clients keep the old key) or cold (its clients get 503 and cause no
// upstream call).
func TestFaultRetryAfterHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const retryAfter, poll = 90 * time.Second, 5 * time.Second
		r := newRig(t, func(r *rig) {
			r.emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointOIDC, Status: 429, RetryAfter: retryAfter,
				Count: 1, Message: "rate limited"})
		}, rigProfile{name: "train", source: cwapi.SourceAccessKey}, rigProfile{name: "wif", source: cwapi.SourceOIDC})
		t0 := time.Now()
		k1 := r.warmUp("train").KeyID

		var train, wif []clientReply
		var throttled broker.Status
		for at := t0.Add(poll); !at.After(t0.Add(50 * time.Minute)); at = at.Add(poll) {
			sleepUntil(at)
			if at.Equal(t0.Add(30 * time.Minute)) {
				r.emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointAccessKey, Status: 429, RetryAfter: retryAfter,
					Count: 2, Message: "rate limited"})
			}
			train = append(train, r.get("train", 0))
			if at.Before(t0.Add(5 * time.Minute)) {
				wif = append(wif, r.get("wif", 0))
			}
			if calls := r.up.callsTo(cwapi.PathAccessKey); len(calls) == 2 && throttled.Profile == "" {
				throttled, _ = r.status("train")
			}
		}
		within := func(what string, gap time.Duration) {
			t.Helper()
			if hi := retryAfter + time.Duration(float64(retryAfter)*broker.RetryAfterJitter); gap < retryAfter || gap >= hi {
				t.Errorf("%s: next call %s after the 429, want within [%s, %s)", what, gap, retryAfter, hi)
			}
		}

		// Cold profile: one 429, then exactly one call once Retry-After has
		// passed, while its clients asked every 5 s.
		var wc []upstreamCall
		for _, c := range r.up.callsTo(cwapi.PathOIDCCreds) {
			if c.Start.Before(t0.Add(5 * time.Minute)) {
				wc = append(wc, c)
			}
		}
		if len(wc) != 2 || wc[0].Status != 429 || wc[1].Status != http.StatusOK {
			t.Fatalf("cold profile's upstream calls: want 429 then 200; got %s", describeCalls(wc))
		}
		within("cold", wc[1].Start.Sub(wc[0].End))
		for _, rep := range wif {
			before := rep.At.Before(wc[1].Start)
			switch {
			case before && (rep.Status != http.StatusServiceUnavailable || rep.Code != "NoValidKey" ||
				!strings.Contains(rep.Msg, "HTTP 429") || !strings.Contains(rep.Msg, "next upstream attempt at")):
				t.Errorf("cold client at %s before the retry = %d %s; want 503 NoValidKey naming the 429 and the next attempt", r.since(rep.At), rep.Status, rep.Raw)
			case !before && rep.Status != http.StatusOK:
				t.Errorf("cold client at %s after the retry = %d %s", r.since(rep.At), rep.Status, rep.Raw)
			}
		}

		// Warm profile: two 429s, each honoured, then a fresh key; clients never notice.
		tc := r.up.callsTo(cwapi.PathAccessKey)
		if len(tc) != 4 || tc[1].Status != 429 || tc[2].Status != 429 || tc[3].Status != http.StatusOK {
			t.Fatalf("warm profile's upstream calls: want 200, 429, 429, 200; got %s", describeCalls(tc))
		}
		within("warm, first 429", tc[2].Start.Sub(tc[1].End))
		within("warm, second 429", tc[3].Start.Sub(tc[2].End))
		for _, rep := range train {
			if rep.Status != http.StatusOK || (rep.At.Before(tc[3].End.Add(keyWarmup)) && rep.KeyID != k1) {
				t.Errorf("warm client at %s = %d %s; want the old key until the retry succeeded", r.since(rep.At), rep.Status, rep.KeyID)
			}
		}
		if last := train[len(train)-1]; last.KeyID == k1 {
			t.Errorf("warm profile still serves the old key after the retry succeeded")
		}
		if !throttled.Healthy || !strings.Contains(throttled.LastError, "HTTP 429 (RESOURCE_EXHAUSTED)") || throttled.NextAttempt == nil ||
			throttled.NextAttempt.Sub(*throttled.LastErrorAt) < retryAfter {
			t.Errorf("warm status after the 429 = %+v; want healthy, the 429, next attempt after Retry-After", throttled)
		}
		r.checkClean("", nil)
	})
}

// TestFaultTransientErrorsBackOffWithJitter: repeated 500s and 503s are
// retried with the wait doubling from BackoffInitial, capped at BackoffMax,
// each a random draw in [step/2, step); the warm profile's clients keep the
// old key throughout.
func TestFaultTransientErrorsBackOffWithJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n500, n503, poll = 4, 5, 5 * time.Second
		r := newRig(t, nil, rigProfile{name: "train", source: cwapi.SourceAccessKey})
		t0 := time.Now()
		k1 := r.warmUp("train").KeyID
		var replies []clientReply
		for at := t0.Add(poll); !at.After(t0.Add(50 * time.Minute)); at = at.Add(poll) {
			sleepUntil(at)
			if at.Equal(t0.Add(30 * time.Minute)) {
				r.emu.InjectFault(cwapitest.Fault{Status: 500, Count: n500})
				r.emu.InjectFault(cwapitest.Fault{Status: 503, Count: n503})
			}
			replies = append(replies, r.get("train", 0))
		}

		calls := r.up.callsTo(cwapi.PathAccessKey)
		if len(calls) != 1+n500+n503+1 {
			t.Fatalf("want the warm-up, %d failures and a success; got %s", n500+n503, describeCalls(calls))
		}
		for i, c := range calls[1 : 1+n500+n503] {
			if want := map[bool]int{true: 500, false: 503}[i < n500]; c.Status != want {
				t.Errorf("failed attempt %d: status %d, want %d", i+1, c.Status, want)
			}
		}
		if calls[len(calls)-1].Status != http.StatusOK {
			t.Errorf("last call = %d, want the successful retry", calls[len(calls)-1].Status)
		}
		checkBackoffSpacing(t, "5xx", calls[1:], 1, broker.BackoffInitial, broker.BackoffMax)

		// The cap is reached, and the waits are jittered, not fixed.
		if backoffStep(broker.BackoffInitial, broker.BackoffMax, n500+n503) != broker.BackoffMax {
			t.Fatalf("test does not reach the cap: raise the failure count")
		}
		lowest, highest := math.Inf(1), math.Inf(-1)
		var gaps []string
		for i := 1; i+1 < len(calls); i++ {
			d := backoffStep(broker.BackoffInitial, broker.BackoffMax, i)
			gap := calls[i+1].Start.Sub(calls[i].End)
			frac := float64(gap-d/2) / float64(d/2) // the jitter draw, in [0, 1)
			lowest, highest = min(lowest, frac), max(highest, frac)
			gaps = append(gaps, fmt.Sprintf("%s (step %s)", gap.Round(time.Millisecond), d))
		}
		if highest-lowest < 0.01 {
			t.Errorf("backoff waits %v carry no jitter (draws %.3f–%.3f)", gaps, lowest, highest)
		}
		t.Logf("waits after each failure: %s", strings.Join(gaps, ", "))

		takeover := calls[len(calls)-1].End.Add(keyWarmup)
		for _, rep := range replies {
			if rep.Status != http.StatusOK || (rep.At.Before(takeover) && rep.KeyID != k1) || (!rep.At.Before(takeover) && rep.KeyID == k1) {
				t.Errorf("client at %s = %d %s; want the old key until %s (minted, then warmed up), then the new one", r.since(rep.At), rep.Status, rep.KeyID, r.since(takeover))
			}
		}
		fails := r.events("mint_failed", "train")
		if len(fails) != n500+n503 {
			t.Errorf("%d mint_failed lines, want %d", len(fails), n500+n503)
		}
		for i, l := range fails {
			want := map[bool]string{true: "HTTP 500", false: "HTTP 503"}[i < n500]
			if l.str("level") != "warn" || !strings.Contains(l.str("error"), want) {
				t.Errorf("mint_failed line %d = %v; want warn naming %s", i, l, want)
			}
		}
		r.checkClean("", nil)
	})
}

// TestFaultRevokedUpstreamToken: upstream refuses the profile's credential
// (403 for an identity without permission, 401 for a token it does not
// know). On a cold profile clients get 503 with a JSON body naming the
// refusal; the status page and one error-level log line per attempt say
// so; upstream sees one call per rejected-backoff step however many
// clients ask; once the credential is accepted again a key is served
// within one step.
func TestFaultRevokedUpstreamToken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		denied bool     // a registered identity without permission (403), else an unknown token (401)
		want   []string // in the client message, status reason and log line
		action string   // the plain words in the client message, status reason and log line
	}{
		{"403 permission denied", true, []string{"HTTP 403 (PERMISSION_DENIED)"},
			"upstream refused the profile's credential permission to mint keys"},
		{"401 unknown token", false, []string{"HTTP 401 (UNAUTHENTICATED)"},
			"upstream rejected the profile's credential (revoked, expired or wrong); replace its token file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testRevokedUpstreamToken(t, tc.denied, tc.want, tc.action) })
		})
	}
}

func testRevokedUpstreamToken(t *testing.T, denied bool, want []string, action string) {
	const poll, refused = 5 * time.Second, 30 * time.Minute
	token := "CW-SECRET-revoked-" + randomHex(12)
	r := newRig(t, func(r *rig) {
		if denied {
			r.emu.AddAPIToken(token, cwapitest.Identity{Principal: "coreweave/u-gone", OrgID: rigOrg, Denied: true})
		}
	}, rigProfile{name: "train", source: cwapi.SourceAccessKey, upstreamToken: token})
	synctest.Wait()
	t0 := time.Now()
	says := func(what, text string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s %q does not say %q", what, text, w)
			}
		}
	}

	var pages strings.Builder
	requests := 0
	for at := t0; at.Before(t0.Add(refused)); at = at.Add(poll) {
		sleepUntil(at)
		rep := r.get("train", 0)
		requests++
		if rep.Status != http.StatusServiceUnavailable || rep.Code != "NoValidKey" || rep.CType != "application/json" ||
			!strings.Contains(rep.Msg, "next upstream attempt at") {
			t.Fatalf("client at %s = %d %s %s; want 503 NoValidKey JSON with the next attempt", r.since(at), rep.Status, rep.CType, rep.Raw)
		}
		says("client message", rep.Msg)
		if !strings.Contains(rep.Msg, action) {
			t.Fatalf("client message %q does not say plainly %q", rep.Msg, action)
		}
		pages.WriteString(rep.Raw)
	}
	st, page := r.status("train")
	pages.WriteString(page)
	calls := r.up.callsTo(cwapi.PathAccessKey)
	if st.Healthy || st.ConsecutiveFailures != len(calls) || st.NextAttempt == nil {
		t.Errorf("status = %+v; want unhealthy, %d failures, the next attempt", st, len(calls))
	}
	says("status reason", st.Reason)
	says("status last error", st.LastError)
	if !strings.Contains(st.Reason, action) {
		t.Errorf("status reason %q does not say plainly %q", st.Reason, action)
	}

	// One call per rejected-backoff step, however many clients asked.
	checkBackoffSpacing(t, "rejected", calls, 1, broker.RejectedBackoffInitial, broker.RejectedBackoffMax)
	lo, hi := attemptBounds(refused, 0, broker.RejectedBackoffInitial, broker.RejectedBackoffMax)
	if len(calls) < lo || len(calls) > hi {
		t.Errorf("%d upstream calls in %s, want %d to %d", len(calls), refused, lo, hi)
	}
	for _, c := range calls {
		if c.Status != http.StatusForbidden && c.Status != http.StatusUnauthorized {
			t.Errorf("call at %s got %d, want the refusal", r.since(c.Start), c.Status)
		}
	}
	t.Logf("%d client requests in %s caused %d upstream calls (policy allows %d–%d)", requests, refused, len(calls), lo, hi)

	// Exactly one error-level mint_failed line per attempt, naming the refusal.
	fails := r.events("mint_failed", "train")
	if len(fails) != len(calls) {
		t.Errorf("%d mint_failed lines, want one per call (%d)", len(fails), len(calls))
	}
	for _, l := range fails {
		if l.str("level") != "error" {
			t.Errorf("mint_failed at level %q, want error: a refused credential needs a person", l.str("level"))
		}
		says("log line", l.str("error"))
		if !strings.Contains(l.str("action_needed"), action) {
			t.Errorf("mint_failed action_needed = %q, want %q", l.str("action_needed"), action)
		}
	}
	for _, l := range r.logLines() {
		if l.str("level") == "error" && l.str("event") != "mint_failed" {
			t.Errorf("unexpected error-level line: %v", l)
		}
	}

	// The credential is accepted again: one step later at most, keys flow.
	fixed := time.Now()
	r.emu.AddAPIToken(token, cwapitest.Identity{Principal: "coreweave/u-train", OrgID: rigOrg})
	step := backoffStep(broker.RejectedBackoffInitial, broker.RejectedBackoffMax, len(calls))
	sleepUntil(fixed.Add(step))
	after := r.up.callsTo(cwapi.PathAccessKey)[len(calls):]
	if len(after) != 1 || after[0].Status != http.StatusOK {
		t.Fatalf("calls within one step (%s) of the fix: want one success; got %s", step, describeCalls(after))
	}
	if rep := r.get("train", 0); rep.Status != http.StatusOK {
		t.Errorf("after the fix: %d %s", rep.Status, rep.Raw)
	}
	r.checkClean(pages.String(), nil)
}

// TestFaultSlowUpstreamNeverDelaysWarmProfile: upstream latency (60 s) far
// above a client's timeout (1 s) while a warm profile refreshes: every
// client request is answered from the cache at the instant it arrives; a
// refresh that times out is retried per the backoff policy, not at once.
func TestFaultSlowUpstreamNeverDelaysWarmProfile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lifetime, poll, clientTimeout = time.Hour, time.Second, time.Second
		r := newRig(t, nil, rigProfile{name: "train", source: cwapi.SourceAccessKey, duration: lifetime})
		t0 := time.Now()
		k1 := r.warmUp("train").KeyID
		slowFrom, slowUntil := t0.Add(35*time.Minute), t0.Add(50*time.Minute)

		sleepUntil(slowFrom)
		r.emu.SetLatency(60 * time.Second)
		var replies []clientReply
		var slow broker.Status
		for at := slowFrom; at.Before(slowUntil.Add(2 * time.Minute)); at = at.Add(poll) {
			sleepUntil(at)
			if at.Equal(slowUntil) {
				slow, _ = r.status("train")
				r.emu.SetLatency(0)
			}
			replies = append(replies, r.get("train", clientTimeout))
		}

		calls := r.up.callsTo(cwapi.PathAccessKey)
		var timedOut []upstreamCall
		for _, c := range calls[1:] {
			if c.Status == 0 {
				timedOut = append(timedOut, c)
			}
		}
		if len(timedOut) == 0 || len(calls) != 1+len(timedOut)+1 || calls[len(calls)-1].Status != http.StatusOK {
			t.Fatalf("want the warm-up, timed-out refreshes, a success; got %s", describeCalls(calls))
		}
		took := min(httpTimeout, broker.MintTimeout)
		for _, c := range timedOut {
			if d := c.End.Sub(c.Start); d != took || !strings.Contains(c.Err, "deadline exceeded") {
				t.Errorf("refresh at %s gave up after %s (%s); want %s, the broker's bound on a mint", r.since(c.Start), d, c.Err, took)
			}
		}
		checkBackoffSpacing(t, "timeouts", calls[1:], 1, broker.TimedOutBackoffInitial, broker.BackoffMax)
		window := slowUntil.Sub(timedOut[0].Start)
		lo, hi := attemptBounds(window, took, broker.TimedOutBackoffInitial, broker.BackoffMax)
		if n := len(timedOut); n < lo || n > hi {
			t.Errorf("%d timed-out refreshes in %s, want %d to %d", n, window, lo, hi)
		}
		success := calls[len(calls)-1]
		if d := success.Start.Sub(slowUntil); d < 0 || d > broker.BackoffMax+took {
			t.Errorf("first fast call %s after upstream sped up, want within one step", d)
		}

		// Every client answered at the instant it asked, with a key.
		waited := 0
		for _, rep := range replies {
			if rep.Took != 0 || rep.Status != http.StatusOK || (rep.At.Before(success.End.Add(keyWarmup)) && rep.KeyID != k1) {
				waited++
				if waited <= 5 {
					t.Errorf("client at %s: %d %s after %s; want the cached key at once", r.since(rep.At), rep.Status, rep.KeyID, rep.Took)
				}
			}
		}
		if last := replies[len(replies)-1]; last.KeyID == k1 {
			t.Errorf("still serving the old key after upstream recovered")
		}
		if !slow.Healthy || slow.AccessKeyID != k1 || !strings.Contains(slow.LastError, "deadline exceeded") {
			t.Errorf("status while slow = %+v; want healthy with the old key and the timeout as last error", slow)
		}
		st := r.emu.Stats()
		if st.Requests[cwapitest.EndpointAccessKey] != len(calls) || st.Mints[cwapitest.EndpointAccessKey] != 2 || st.Orphaned[cwapitest.EndpointAccessKey] != 0 {
			t.Errorf("emulator stats = %+v; want %d requests, 2 mints, nothing orphaned", st, len(calls))
		}
		t.Logf("%d client requests answered at once; %d refreshes timed out after %s each (policy allows %d–%d)",
			len(replies), len(timedOut), took, lo, hi)
		r.checkClean("", nil)
	})
}

// TestFaultMalformedReplyNeverServed: a 200 reply that is not a usable key
// (truncated JSON, no secret, already expired, expiring within
// MinUsableLifetime) is a failed mint: a cold profile answers 503 and a
// warm one keeps its old key, the status page shows the error, and the
// bad key is never served.
func TestFaultMalformedReplyNeverServed(t *testing.T) {
	const bogusID = "CWBOGUS000000001"
	bogusSecret := "cwo" + strings.Repeat("b0gus", 8)
	reply := func(secret bool, expiry time.Duration) string {
		s := `{"accessKeyId":"` + bogusID + `","principalName":"coreweave/u-train","expiry":"` +
			bubbleEpoch.Add(expiry).Format(time.RFC3339) + `"`
		if secret {
			s += `,"secretKey":"` + bogusSecret + `"`
		}
		return s + `}`
	}
	for _, tc := range []struct {
		name, body, why string
	}{
		{"truncated JSON", "", "invalid JSON"},
		{"no secret", reply(false, time.Hour), "missing or malformed secret key"},
		{"already expired", reply(true, -time.Minute), "expires in -"},
		{"expires within MinUsableLifetime", reply(true, broker.MinUsableLifetime/2), "expires in"},
	} {
		t.Run("cold/"+tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testMalformedCold(t, tc.body, tc.why, bogusID, bogusSecret) })
		})
	}
	t.Run("warm/no secret", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { testMalformedWarm(t, reply(false, 2*time.Hour), bogusID) })
	})
}

func testMalformedCold(t *testing.T, body, why, bogusID, bogusSecret string) {
	const poll, broken = 5 * time.Second, 5 * time.Minute
	r := newRig(t, func(r *rig) {
		r.emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointAccessKey, Malformed: true, Body: body})
	}, rigProfile{name: "train", source: cwapi.SourceAccessKey})
	t0 := time.Now()
	var pages strings.Builder
	for at := t0; at.Before(t0.Add(broken)); at = at.Add(poll) {
		sleepUntil(at)
		rep := r.get("train", 0)
		// Clients get the class only (issue 11, finding 5); the log says why.
		if rep.Status != http.StatusServiceUnavailable || rep.Code != "NoValidKey" ||
			!strings.Contains(rep.Msg, "malformed upstream reply") {
			t.Fatalf("client at %s = %d %s; want 503 NoValidKey naming the malformed reply (%s)", r.since(at), rep.Status, rep.Raw, why)
		}
		pages.WriteString(rep.Raw)
	}
	st, page := r.status("train")
	pages.WriteString(page)
	if st.Healthy || st.AccessKeyID != "" || !strings.Contains(st.LastError, "malformed upstream reply") || !strings.Contains(st.Reason, "malformed upstream reply") {
		t.Errorf("status = %+v; want unhealthy, no key, the malformed reply as reason", st)
	}
	calls := r.up.callsTo(cwapi.PathAccessKey)
	checkBackoffSpacing(t, "malformed", calls, 1, broker.BackoffInitial, broker.BackoffMax)
	if lo, hi := attemptBounds(broken, 0, broker.BackoffInitial, broker.BackoffMax); len(calls) < lo || len(calls) > hi {
		t.Errorf("%d calls in %s, want %d to %d", len(calls), broken, lo, hi)
	}
	fails := r.events("mint_failed", "train")
	if len(fails) != len(calls) {
		t.Errorf("%d mint_failed lines, want %d", len(fails), len(calls))
	}
	for _, l := range fails {
		if l.str("level") != "warn" || !strings.Contains(l.str("error"), "malformed upstream reply") || !strings.Contains(l.str("error"), why) {
			t.Errorf("mint_failed line = %v; want warn naming the malformed reply", l)
			break
		}
	}

	// Upstream answers properly again: a real key within one step.
	fixed := time.Now()
	r.emu.ClearFaults()
	sleepUntil(fixed.Add(backoffStep(broker.BackoffInitial, broker.BackoffMax, len(calls))))
	rep := r.get("train", 0)
	k, ok := r.emu.Key(rep.KeyID)
	if rep.Status != http.StatusOK || rep.KeyID == bogusID || !ok || k.SecretKey != rep.Secret {
		t.Errorf("after the fix: %d %s; want a key the emulator minted", rep.Status, rep.KeyID)
	}
	r.checkClean(pages.String(), map[string]string{"bogus secret": bogusSecret})
}

func testMalformedWarm(t *testing.T, body, bogusID string) {
	const poll = 5 * time.Second
	r := newRig(t, nil, rigProfile{name: "train", source: cwapi.SourceAccessKey})
	t0 := time.Now()
	k1 := r.warmUp("train").KeyID
	brokenFrom, brokenUntil := t0.Add(30*time.Minute), t0.Add(45*time.Minute)
	var replies []clientReply
	var broken broker.Status
	for at := t0.Add(poll); at.Before(brokenUntil.Add(2 * time.Minute)); at = at.Add(poll) {
		sleepUntil(at)
		switch {
		case at.Equal(brokenFrom):
			r.emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointAccessKey, Malformed: true, Body: body})
		case at.Equal(brokenUntil):
			broken, _ = r.status("train")
			r.emu.ClearFaults()
		}
		replies = append(replies, r.get("train", 0))
	}
	calls := r.up.callsTo(cwapi.PathAccessKey)
	success := calls[len(calls)-1]
	if len(calls) < 3 || success.Status != http.StatusOK || success.Start.Before(brokenUntil) {
		t.Fatalf("want the warm-up, malformed refreshes, a success after the fix; got %s", describeCalls(calls))
	}
	if d := success.Start.Sub(brokenUntil); d >= backoffStep(broker.BackoffInitial, broker.BackoffMax, len(calls)-2) {
		t.Errorf("fresh key %s after the fix, want within one backoff step", d)
	}
	var k2 string
	for _, rep := range replies {
		switch {
		case rep.Status != http.StatusOK || rep.KeyID == bogusID:
			t.Errorf("client at %s = %d %s; want a valid key", r.since(rep.At), rep.Status, rep.KeyID)
		case rep.At.Before(success.End.Add(keyWarmup)) && rep.KeyID != k1:
			t.Errorf("client at %s got %s before the fresh key warmed up, want the old key", r.since(rep.At), rep.KeyID)
		case !rep.At.Before(success.End.Add(keyWarmup)):
			k2 = rep.KeyID
		}
	}
	if k2 == "" || k2 == k1 {
		t.Errorf("no fresh key after the fix (last %q)", k2)
	}
	if !broken.Healthy || broken.AccessKeyID != k1 || broken.ConsecutiveFailures != len(calls)-2 ||
		!strings.Contains(broken.LastError, "malformed upstream reply") {
		t.Errorf("status while replies were malformed = %+v; want healthy with the old key and the error", broken)
	}
	r.checkClean("", nil)
}

// TestFaultTimedOutMintNotRetriedBlindly: upstream mints each key but its
// reply arrives after the broker has given up (reply latency above
// MintTimeout). Mints are not idempotent, so every retry leaves an
// orphaned key: over 10 minutes the calls must follow the backoff
// schedule, however often clients ask, and the emulator's orphan count
// shows what they cost. After each timeout the daemon finds the orphan by
// its attributes and revokes it.
func TestFaultTimedOutMintNotRetriedBlindly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window, poll, clientTimeout = 10 * time.Minute, 5 * time.Second, time.Second
		r := newRig(t, func(r *rig) { r.emu.SetReplyLatency(broker.MintTimeout + 40*time.Second) },
			rigProfile{name: "train", source: cwapi.SourceAccessKey})
		t0 := time.Now()
		requests := 0
		for at := t0; at.Before(t0.Add(window)); at = at.Add(poll) {
			sleepUntil(at)
			rep := r.get("train", clientTimeout)
			requests++
			if rep.Status != http.StatusServiceUnavailable || rep.Code != "NoValidKey" {
				t.Fatalf("client at %s = %d %s; want 503 NoValidKey", r.since(at), rep.Status, rep.Raw)
			}
		}
		r.emu.SetReplyLatency(0)
		// Let the last slow call end and a fast one succeed: a call is
		// recorded when it ends.
		took := min(httpTimeout, broker.MintTimeout)
		sleepUntil(t0.Add(window + took + broker.BackoffMax))
		rep := r.get("train", clientTimeout)
		calls := r.up.callsTo(cwapi.PathAccessKey)
		last := calls[len(calls)-1]
		if rep.Status != http.StatusOK || last.Status != http.StatusOK {
			t.Fatalf("after upstream sped up: client %d, calls %s", rep.Status, describeCalls(calls))
		}
		for _, c := range calls[:len(calls)-1] {
			if d := c.End.Sub(c.Start); c.Status != 0 || d != took {
				t.Errorf("call at %s: status %d after %s; want abandoned after %s", r.since(c.Start), c.Status, d, took)
			}
		}
		checkBackoffSpacing(t, "timed-out mints", calls, 1, broker.TimedOutBackoffInitial, broker.BackoffMax)
		n := 0
		for _, c := range calls {
			if c.Start.Before(t0.Add(window)) {
				n++
			}
		}
		blind := int(math.Ceil(float64(window) / float64(broker.BackoffInitial/2)))
		if n > blind {
			t.Errorf("%d mints in %s: more than even the shortest backoff allows (%d)", n, window, blind)
		}
		lo, hi := attemptBounds(window, took, broker.TimedOutBackoffInitial, broker.BackoffMax)
		if n < lo || n > hi {
			t.Errorf("%d mints in %s, want %d to %d per the backoff schedule", n, window, lo, hi)
		}

		orphans := len(calls) - 1
		keys := r.emu.Keys()
		st := r.emu.Stats()
		if st.Orphaned[cwapitest.EndpointAccessKey] != orphans || st.Mints[cwapitest.EndpointAccessKey] != len(calls) || len(keys) != len(calls) {
			t.Errorf("emulator: %d orphaned, %d minted, %d keys; want %d orphaned of %d (one per abandoned call)",
				st.Orphaned[cwapitest.EndpointAccessKey], st.Mints[cwapitest.EndpointAccessKey], len(keys), orphans, len(calls))
		}
		for _, k := range keys[:len(keys)-1] {
			if k.AccessKeyID == rep.KeyID || k.Status != cwapitest.StatusDeleted {
				t.Errorf("orphaned key %s: status %s, served %v; want revoked by the reaper", k.AccessKeyID, k.Status, k.AccessKeyID == rep.KeyID)
			}
		}
		if rep.KeyID != keys[len(keys)-1].AccessKeyID {
			t.Errorf("served %s, want the one key whose reply arrived, %s", rep.KeyID, keys[len(keys)-1].AccessKeyID)
		}
		if f := len(r.events("mint_failed", "train")); f != orphans {
			t.Errorf("%d mint_failed lines, want %d", f, orphans)
		}
		if got := len(r.events("orphan_revoked", "train")); got != orphans {
			t.Errorf("%d orphan_revoked lines, want %d", got, orphans)
		}
		t.Logf("%d client requests in %s; %d mints started, each abandoned after %s (policy allows %d–%d; blind retrying up to %d); %d orphaned keys, all revoked",
			requests, window, n, took, lo, hi, blind, orphans)
		r.checkClean("", nil)
	})
}

// TestFaultDaemonWarmProfileFastWhileUpstreamStalls runs the real serve over
// loopback sockets. One profile's mint is stalled upstream for 10 s and
// another's replies are malformed; the warm profiles keep answering well
// within a client's timeout, and the malformed one answers 503 with a JSON
// error.
func TestFaultDaemonWarmProfileFastWhileUpstreamStalls(t *testing.T) {
	const stall = 10 * time.Second
	began := time.Now() // the stalled mint starts after this and lasts stall
	noSecret := `{"accessKeyId":"CWBOGUS000000002","principalName":"role/x","expiry":"` +
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`
	d := startDaemon(t, func(emu *cwapitest.Emulator) {
		emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointOIDC, Malformed: true, Body: noSecret})
		emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointSAML, Status: 504, Delay: stall, Count: 1})
	})
	client := &http.Client{Timeout: time.Second}
	get := func(path, token string) (int, string, time.Duration, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+d.addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", time.Since(start), err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start), nil
	}

	// Wait (bounded) until the warm profiles hold keys, the OIDC profile
	// has failed and the SAML mint is stalled upstream.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body, _, err := get("/v1/profiles", "")
		var page struct{ Profiles []broker.Status }
		if err == nil && json.Unmarshal([]byte(body), &page) == nil {
			ready := map[string]bool{}
			for _, s := range page.Profiles {
				ready[s.Profile] = s.Healthy || (s.Profile == "wif" && s.ConsecutiveFailures > 0)
			}
			if ready["train"] && ready["fast-exchange"] && ready["wif"] && d.emu.Stats().InFlight >= 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not reach the stalled state in 5s: %s (emulator %+v)", body, d.emu.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}

	var slowest time.Duration
	for i := range 50 {
		for _, p := range []string{"train", "fast-exchange"} {
			status, body, took, err := get("/v1/credentials/"+p, d.tokens[p])
			if err != nil || status != http.StatusOK {
				t.Fatalf("warm %s request %d: %d %s %v", p, i, status, body, err)
			}
			slowest = max(slowest, took)
		}
	}
	if slowest >= time.Second {
		t.Errorf("slowest warm request took %s while upstream stalled, want well under the client's 1s timeout", slowest)
	}
	if st := d.emu.Stats(); st.InFlight < 1 || time.Since(began) >= stall {
		t.Fatalf("the upstream stall ended before the warm requests did (%+v): the test proved nothing", st)
	}

	status, body, took, err := get("/v1/credentials/wif", d.tokens["wif"])
	var e struct{ Code, Message string }
	if err != nil || status != http.StatusServiceUnavailable || json.Unmarshal([]byte(body), &e) != nil ||
		e.Code != "NoValidKey" || !strings.Contains(e.Message, "malformed upstream reply") || strings.Contains(body, "CWBOGUS") {
		t.Errorf("cold profile with malformed replies: %d %s %v; want 503 NoValidKey JSON naming the malformed reply", status, body, err)
	}
	t.Logf("100 warm requests during a %s upstream stall: slowest %s; malformed cold profile answered %d in %s", stall, slowest, status, took)

	// A client of the stalled cold profile does wait, and gives up on its own timeout.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+"/v1/credentials/sso", nil)
	req.Header.Set("Authorization", d.tokens["sso"])
	if resp, err := http.DefaultClient.Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Errorf("stalled cold profile answered %d %s before its mint ended", resp.StatusCode, b)
	}
}
