package cwapitest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// mintVia sends a valid request to a minting endpoint, or a list request
// for EndpointList.
func mintVia(e *env, endpoint string) reply {
	e.t.Helper()
	switch endpoint {
	case EndpointAccessKey:
		return e.do("POST", pathAccessKey, bearer(testToken), `{"durationSeconds":60}`)
	case EndpointAPIToken:
		return e.do("GET", pathAPIToken, bearer(testToken), "")
	case EndpointOIDC:
		return e.do("POST", pathOIDC, "", oidcBody(testOrg, validJWT(e), 60))
	case EndpointContainer:
		return e.do("GET", pathOIDC+"/"+testOrg, validJWT(e), "")
	case EndpointSAML:
		return e.do("POST", pathSAML, "", samlBody(testOrg, testSAMLConfig, MakeSAMLResponse("r", "p"), 60))
	case EndpointList:
		return e.do("GET", pathAccessKey, bearer(testToken), "")
	}
	e.t.Fatalf("no request for endpoint %q", endpoint)
	return reply{}
}

func TestFaults(t *testing.T) {
	type step struct {
		endpoint     string
		status, code int
		retryAfter   string
		raw          string // exact body, for malformed replies
	}
	ok := func(ep string) step { return step{endpoint: ep, status: 200} }
	tests := []struct {
		name   string
		faults []Fault
		steps  []step
		mints  int
	}{
		{
			name:   "count and retry-after",
			faults: []Fault{{Status: 503, Code: 14, Count: 2, RetryAfter: 1500 * time.Millisecond, Message: "try later"}},
			steps: []step{
				{EndpointAccessKey, 503, 14, "2", ""},
				{EndpointAPIToken, 503, 14, "2", ""},
				ok(EndpointAccessKey),
			},
			mints: 1,
		},
		{
			name:   "endpoint-specific",
			faults: []Fault{{Endpoint: EndpointAPIToken, Status: 401, Code: 16, Count: 1, Message: "token revoked"}},
			steps:  []step{ok(EndpointAccessKey), ok(EndpointOIDC), {endpoint: EndpointAPIToken, status: 401, code: 16}, ok(EndpointAPIToken)},
			mints:  3,
		},
		{
			name:   "defaults derived from status or code",
			faults: []Fault{{Count: 1}, {Status: 429, Count: 1}, {Code: 7, Count: 1}, {Status: 200, Code: 13, Count: 1}, {Status: 502, Count: 1}},
			steps: []step{
				{endpoint: EndpointSAML, status: 503, code: 14},
				{endpoint: EndpointSAML, status: 429, code: 8},
				{endpoint: EndpointSAML, status: 403, code: 7},
				{endpoint: EndpointSAML, status: 500, code: 13},
				{endpoint: EndpointSAML, status: 502, code: 14},
				ok(EndpointSAML),
			},
			mints: 1,
		},
		{
			name:   "FIFO among matching faults",
			faults: []Fault{{Endpoint: EndpointOIDC, Status: 500, Count: 1}, {Status: 429, Count: 1}},
			steps: []step{
				{endpoint: EndpointContainer, status: 429, code: 8},
				{endpoint: EndpointOIDC, status: 500, code: 13},
				ok(EndpointOIDC), ok(EndpointContainer),
			},
			mints: 2,
		},
		{
			name:   "until cleared, never on management endpoints",
			faults: []Fault{{Status: 503}},
			steps: []step{
				{endpoint: EndpointAccessKey, status: 503, code: 14},
				{endpoint: EndpointAccessKey, status: 503, code: 14},
				ok(EndpointList),
				{endpoint: EndpointContainer, status: 503, code: 14},
			},
		},
		{
			name:   "malformed",
			faults: []Fault{{Malformed: true, Count: 2, Status: 503}, {Malformed: true, Count: 1, Body: `{"accessKeyId":"CWAAAAAAAAAAAAAA"}`}},
			steps: []step{
				{endpoint: EndpointAccessKey, status: 200, raw: `{"accessKeyId":"CW`},
				{endpoint: EndpointContainer, status: 200, raw: `{"AccessKeyId":"CW`},
				{endpoint: EndpointOIDC, status: 200, raw: `{"accessKeyId":"CWAAAAAAAAAAAAAA"}`},
				ok(EndpointOIDC),
			},
			mints: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			for _, f := range tc.faults {
				e.emu.InjectFault(f)
			}
			for i, s := range tc.steps {
				r := mintVia(e, s.endpoint)
				switch {
				case s.raw != "":
					if r.status != s.status || r.raw != s.raw {
						t.Errorf("step %d (%s) = %d %s, want %d %s", i, s.endpoint, r.status, r.raw, s.status, s.raw)
					}
				case s.status == 200:
					if r.status != 200 {
						t.Errorf("step %d (%s) = %d %s, want 200", i, s.endpoint, r.status, r.raw)
					}
				default:
					wantError(t, r, s.status, s.code, "")
				}
				if got := r.header.Get("Retry-After"); got != s.retryAfter {
					t.Errorf("step %d: Retry-After = %q, want %q", i, got, s.retryAfter)
				}
			}
			st := e.emu.Stats()
			total, requests := 0, 0
			for _, n := range st.Mints {
				total += n
			}
			for ep, n := range st.Requests {
				if IsMintingEndpoint(ep) {
					requests += n
				}
			}
			if total != tc.mints || len(e.emu.Keys()) != tc.mints {
				t.Errorf("mints = %d (keys %d), want %d", total, len(e.emu.Keys()), tc.mints)
			}
			minting := 0
			for _, s := range tc.steps {
				if IsMintingEndpoint(s.endpoint) {
					minting++
				}
			}
			if requests != minting {
				t.Errorf("minting requests counted = %d, want %d", requests, minting)
			}
			e.emu.ClearFaults()
			if f := e.emu.Faults(); len(f) != 0 {
				t.Errorf("Faults() after ClearFaults = %v", f)
			}
			if r := mintVia(e, EndpointAccessKey); r.status != 200 {
				t.Errorf("after ClearFaults: %d %s", r.status, r.raw)
			}
		})
	}
}

func TestFaultMessage(t *testing.T) {
	e := newEnv(t)
	e.emu.InjectFault(Fault{Endpoint: EndpointAPIToken, Status: 401, Code: 16, Message: "token revoked", Count: 1})
	e.emu.InjectFault(Fault{Count: 1})
	wantError(t, mintVia(e, EndpointAPIToken), 401, 16, "token revoked")
	wantError(t, mintVia(e, EndpointAPIToken), 503, 14, "injected fault")
}

func TestLatencyAndInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		emu := New(Options{})
		emu.AddAPIToken(testToken, Identity{Principal: "coreweave/u1", OrgID: testOrg})
		emu.SetLatency(200 * time.Millisecond)
		request := func(ctx context.Context) *http.Request {
			r := httptest.NewRequestWithContext(ctx, "GET", pathAPIToken, nil)
			r.Header.Set("Authorization", bearer(testToken))
			return r
		}

		const n = 5
		start := time.Now()
		recs := make([]*httptest.ResponseRecorder, n)
		var wg sync.WaitGroup
		for i := range n {
			recs[i] = httptest.NewRecorder()
			wg.Go(func() { emu.ServeHTTP(recs[i], request(t.Context())) })
		}
		synctest.Wait() // every request is now waiting out the latency
		if st := emu.Stats(); st.InFlight != n || st.MaxInFlight != n || len(st.Mints) != 0 {
			t.Errorf("during latency: Stats() = %+v, want %d in flight, no mints", st, n)
		}
		wg.Wait()
		if d := time.Since(start); d != 200*time.Millisecond {
			t.Errorf("requests took %s, want the 200ms latency", d)
		}
		for i, rec := range recs {
			if rec.Code != http.StatusOK {
				t.Errorf("request %d = %d %s", i, rec.Code, rec.Body)
			}
		}
		if st := emu.Stats(); st.InFlight != 0 || st.MaxInFlight != n || st.Mints[EndpointAPIToken] != n {
			t.Errorf("after: Stats() = %+v, want 0 in flight, max %d, %d mints", st, n, n)
		}

		// A request whose context ends stops waiting at once and mints nothing.
		ctx, cancel := context.WithCancel(t.Context())
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			emu.ServeHTTP(rec, request(ctx))
			close(done)
		}()
		synctest.Wait()
		if st := emu.Stats(); st.InFlight != 1 {
			t.Errorf("Stats().InFlight = %d, want 1", st.InFlight)
		}
		start = time.Now()
		cancel()
		<-done
		if d := time.Since(start); d != 0 {
			t.Errorf("cancelled request returned after %s, want at once", d)
		}
		var body statusBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != 499 || err != nil || body.Code != CodeCanceled {
			t.Errorf("cancelled request = %d %s, want 499 code 1", rec.Code, rec.Body)
		}
		if st := emu.Stats(); st.InFlight != 0 || st.Mints[EndpointAPIToken] != n || st.Requests[EndpointAPIToken] != n+1 {
			t.Errorf("after cancel: Stats() = %+v", st)
		}

		// Latency applies to minting only; negative means none.
		emu.SetLatency(-time.Second)
		if d := emu.Latency(); d != 0 {
			t.Errorf("Latency() = %s after SetLatency(-1s), want 0", d)
		}
	})
}

// TestReplyLatencyOrphansKeys: with a reply latency the key exists before
// the reply is sent, so a client that gives up leaves an active key behind,
// counted in Stats.Orphaned; a patient client gets its key late.
func TestReplyLatencyOrphansKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var minted []Key
		emu := New(Options{OnMint: func(k Key) { minted = append(minted, k) }})
		emu.AddAPIToken(testToken, Identity{Principal: "coreweave/u1", OrgID: testOrg})
		emu.SetReplyLatency(time.Minute)
		serve := func(ctx context.Context) *httptest.ResponseRecorder {
			r := httptest.NewRequestWithContext(ctx, "POST", pathAccessKey, strings.NewReader(`{"durationSeconds":3600}`))
			r.Header.Set("Authorization", bearer(testToken))
			rec := httptest.NewRecorder()
			emu.ServeHTTP(rec, r)
			return rec
		}

		// A client that gives up after 15 s: the key is minted at once,
		// the reply is lost.
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		start := time.Now()
		rec := serve(ctx)
		cancel()
		if d := time.Since(start); d != 15*time.Second {
			t.Errorf("abandoned request returned after %s, want the client's 15s", d)
		}
		var body statusBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != 499 || err != nil || body.Code != CodeCanceled {
			t.Errorf("abandoned request = %d %s, want 499 code 1", rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), "cwo") {
			t.Errorf("abandoned reply holds a secret: %s", rec.Body)
		}
		if len(minted) != 1 || minted[0].Created != start {
			t.Fatalf("minted %v, want one key minted when the request arrived", minted)
		}
		if k, ok := emu.Key(minted[0].AccessKeyID); !ok || k.Status != StatusActive {
			t.Errorf("orphaned key = %+v, %v; want it stored and active", k, ok)
		}
		st := emu.Stats()
		if st.Mints[EndpointAccessKey] != 1 || st.Orphaned[EndpointAccessKey] != 1 || st.InFlight != 0 {
			t.Errorf("Stats() = %+v, want 1 mint, 1 orphaned, none in flight", st)
		}

		// A patient client gets its key after the reply latency.
		start = time.Now()
		rec = serve(t.Context())
		if d := time.Since(start); d != time.Minute || rec.Code != http.StatusOK {
			t.Errorf("patient request = %d after %s, want 200 after 1m", rec.Code, d)
		}
		if len(minted) != 2 || !strings.Contains(rec.Body.String(), minted[1].SecretKey) {
			t.Errorf("patient reply %s is not the second minted key", rec.Body)
		}
		if st := emu.Stats(); st.Mints[EndpointAccessKey] != 2 || st.Orphaned[EndpointAccessKey] != 1 {
			t.Errorf("Stats() = %+v, want 2 mints, still 1 orphaned", st)
		}

		// Faulted requests mint nothing, so they wait no reply latency.
		emu.InjectFault(Fault{Status: 503, Count: 1})
		start = time.Now()
		if rec := serve(t.Context()); rec.Code != 503 || time.Since(start) != 0 {
			t.Errorf("faulted request = %d after %s, want 503 at once", rec.Code, time.Since(start))
		}
		emu.ResetStats()
		if st := emu.Stats(); len(st.Orphaned) != 0 {
			t.Errorf("Orphaned after ResetStats = %v", st.Orphaned)
		}
		emu.SetReplyLatency(-time.Second)
		if d := emu.ReplyLatency(); d != 0 {
			t.Errorf("ReplyLatency() = %s after SetReplyLatency(-1s), want 0", d)
		}
	})
}

// TestFaultDelay: a fault's Delay holds its reply back, after the latency;
// a client that gives up meanwhile gets 499 and uses up the fault anyway.
func TestFaultDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		emu := New(Options{})
		emu.AddAPIToken(testToken, Identity{Principal: "coreweave/u1", OrgID: testOrg})
		emu.SetLatency(time.Second)
		emu.InjectFault(Fault{Status: 504, Delay: 10 * time.Second, Count: 2})
		serve := func(ctx context.Context) *httptest.ResponseRecorder {
			r := httptest.NewRequestWithContext(ctx, "GET", pathAPIToken, nil)
			r.Header.Set("Authorization", bearer(testToken))
			rec := httptest.NewRecorder()
			emu.ServeHTTP(rec, r)
			return rec
		}
		start := time.Now()
		if rec := serve(t.Context()); rec.Code != http.StatusGatewayTimeout || time.Since(start) != 11*time.Second {
			t.Errorf("delayed fault = %d after %s, want 504 after 1s latency + 10s delay", rec.Code, time.Since(start))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		start = time.Now()
		if rec := serve(ctx); rec.Code != 499 || time.Since(start) != 5*time.Second {
			t.Errorf("abandoned delayed fault = %d after %s, want 499 after 5s", rec.Code, time.Since(start))
		}
		if f := emu.Faults(); len(f) != 0 {
			t.Errorf("faults left = %v, want both applications used", f)
		}
		start = time.Now()
		if rec := serve(t.Context()); rec.Code != http.StatusOK || time.Since(start) != time.Second {
			t.Errorf("after the fault = %d after %s, want 200 after the 1s latency", rec.Code, time.Since(start))
		}
		if st := emu.Stats(); st.Requests[EndpointAPIToken] != 3 || st.Mints[EndpointAPIToken] != 1 {
			t.Errorf("Stats() = %+v, want 3 requests, 1 mint", st)
		}
	})
}

// TestWaitEndsWhenClientHangsUp: over a real connection, a client that
// gives up on a POST mint during the latency, a fault's delay or the reply
// latency ends the wait at once. net/http only notices the hang-up once the
// request body has been read, so the emulator reads it before waiting.
func TestWaitEndsWhenClientHangsUp(t *testing.T) {
	const wait = 3 * time.Second // what a missed hang-up costs
	for _, tc := range []struct {
		name string
		set  func(*Emulator)
	}{
		{"latency", func(e *Emulator) { e.SetLatency(wait) }},
		{"fault delay", func(e *Emulator) { e.InjectFault(Fault{Status: 504, Delay: wait}) }},
		{"reply latency", func(e *Emulator) { e.SetReplyLatency(wait) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.set(e.emu)
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+pathAccessKey, strings.NewReader(`{"durationSeconds":60}`))
			req.Header.Set("Authorization", bearer(testToken))
			if resp, err := e.ts.Client().Do(req); err == nil {
				resp.Body.Close()
				t.Fatalf("request answered %d before the client gave up", resp.StatusCode)
			}
			start := time.Now()
			for e.emu.Stats().InFlight != 0 {
				if time.Since(start) > wait/2 {
					t.Fatalf("the handler still waits %s after the client hung up", time.Since(start))
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestMaxInFlightOverHTTP(t *testing.T) {
	const n = 8
	entered, release := make(chan struct{}), make(chan struct{})
	e := newEnv(t, func(o *Options) {
		o.OnMint = func(Key) {
			entered <- struct{}{}
			<-release
		}
	})
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := e.try("GET", pathAPIToken, bearer(testToken), "")
			if err != nil {
				t.Error(err)
				return
			}
			statuses[i] = r.status
		})
	}
	for range n {
		<-entered // every request is inside the handler, held in OnMint
	}
	if st := e.emu.Stats(); st.InFlight != n || st.MaxInFlight != n {
		t.Errorf("held: Stats() = %+v, want %d in flight", st, n)
	}
	close(release)
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("request %d = %d", i, s)
		}
	}
	if st := e.emu.Stats(); st.InFlight != 0 || st.MaxInFlight != n {
		t.Errorf("done: Stats() = %+v, want 0 in flight, max %d", st, n)
	}
	e.emu.ResetStats()
	if st := e.emu.Stats(); st.MaxInFlight != 0 || len(st.Requests) != 0 || len(st.Mints) != 0 {
		t.Errorf("after ResetStats: %+v", st)
	}
}

func TestControlEndpoints(t *testing.T) {
	e := newEnv(t)
	ctl := func(method, path, body string) map[string]any {
		t.Helper()
		return e.mustOK(method, "/_emulator"+path, "", body)
	}

	// Identities.
	wantFields(t, ctl("POST", "/api-tokens", `{"token":"CW-SECRET-ctl","principal":"coreweave/ctl","orgId":"cwctl"}`))
	ctl("POST", "/api-tokens", `{"token":"CW-SECRET-ctl-denied","principal":"coreweave/d","orgId":"cwctl","denied":true}`)
	ctlIss, err := NewIssuer("https://ctl.example", IssuerOptions{Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(ctlIss.KeySet())
	ctl("POST", "/oidc-issuers", `{"issuer":"https://ctl.example","orgId":"cwctl","audience":"ctl-aud","keys":`+string(jwks)+`}`)
	ctl("POST", "/saml-configs", `{"configId":"ctlcfg","orgId":"cwctl"}`)
	key := e.mustOK("POST", pathAccessKey, bearer("CW-SECRET-ctl"), `{"durationSeconds":60}`)
	if key["principalName"] != "coreweave/ctl" {
		t.Errorf("principalName = %v", key["principalName"])
	}
	wantError(t, e.do("GET", pathAPIToken, bearer("CW-SECRET-ctl-denied"), ""), 403, 7, "permission denied")
	jwt := ctlIss.Token(TokenSpec{Subject: "s", Audience: []string{"ctl-aud"}})
	e.mustOK("POST", pathOIDC, "", oidcBody("cwctl", jwt, 60))
	e.mustOK("POST", pathSAML, "", samlBody("cwctl", "ctlcfg", MakeSAMLResponse("r", "p"), 60))

	// Keys, with secrets.
	id := key["accessKeyId"].(string)
	k := ctl("GET", "/keys/"+id, "")
	wantFields(t, k, "accessKeyId", "secretKey", "principalName", "orgId", "attributes", "expiry", "created", "endpoint", "status")
	if k["secretKey"] != key["secretKey"] || k["status"] != StatusActive || k["endpoint"] != EndpointAccessKey || k["expiry"] != "2026-07-14T12:01:00Z" {
		t.Errorf("control key = %v, want the minted key %v", k, key)
	}
	if keys := ctl("GET", "/keys", "")["keys"].([]any); len(keys) != 3 {
		t.Errorf("GET /_emulator/keys lists %d keys, want 3", len(keys))
	}
	wantError(t, e.do("GET", "/_emulator/keys/CWNOSUCHKEY00000", "", ""), 404, 5, "not found")

	// Latency.
	if got := ctl("PUT", "/latency", `{"latency":"250ms"}`); got["latency"] != "250ms" {
		t.Errorf("PUT latency = %v", got)
	}
	if got := ctl("GET", "/latency", ""); got["latency"] != "250ms" || e.emu.Latency() != 250*time.Millisecond {
		t.Errorf("GET latency = %v, Latency() = %s", got, e.emu.Latency())
	}
	ctl("PUT", "/latency", `{"latency":1.5}`)
	if d := e.emu.Latency(); d != 1500*time.Millisecond {
		t.Errorf("latency from seconds = %s, want 1.5s", d)
	}
	ctl("PUT", "/latency", `{"latency":"0s"}`)
	if got := ctl("PUT", "/reply-latency", `{"latency":"1m0s"}`); got["latency"] != "1m0s" {
		t.Errorf("PUT reply-latency = %v", got)
	}
	if got := ctl("GET", "/reply-latency", ""); got["latency"] != "1m0s" || e.emu.ReplyLatency() != time.Minute || e.emu.Latency() != 0 {
		t.Errorf("GET reply-latency = %v, ReplyLatency() = %s, Latency() = %s", got, e.emu.ReplyLatency(), e.emu.Latency())
	}
	ctl("PUT", "/reply-latency", `{"latency":0}`)
	if d := e.emu.ReplyLatency(); d != 0 {
		t.Errorf("reply latency after PUT 0 = %s", d)
	}

	// Faults.
	wantFields(t, ctl("POST", "/faults", `{"endpoint":"","status":503,"code":14,"count":3,"retryAfter":"2s"}`))
	ctl("POST", "/faults", `{"endpoint":"saml","malformed":true,"body":"{}","delay":"10s"}`)
	faults := ctl("GET", "/faults", "")["faults"].([]any)
	if len(faults) != 2 {
		t.Fatalf("GET faults = %v, want 2", faults)
	}
	if f1 := faults[1].(map[string]any); f1["delay"] != "10s" || e.emu.Faults()[1].Delay != 10*time.Second {
		t.Errorf("fault with delay = %v", f1)
	}
	f0 := faults[0].(map[string]any)
	wantFields(t, f0, "endpoint", "status", "code", "message", "retryAfter", "count", "malformed")
	if f0["retryAfter"] != "2s" || f0["count"] != 3.0 || f0["status"] != 503.0 {
		t.Errorf("fault = %v", f0)
	}
	r := mintVia(e, EndpointAPIToken)
	wantError(t, r, 503, 14, "injected fault")
	if r.header.Get("Retry-After") != "2" {
		t.Errorf("Retry-After = %q, want 2", r.header.Get("Retry-After"))
	}
	if f := e.emu.Faults(); f[0].Count != 2 {
		t.Errorf("remaining count = %d, want 2", f[0].Count)
	}
	wantFields(t, ctl("DELETE", "/faults", ""))
	if f := ctl("GET", "/faults", "")["faults"].([]any); len(f) != 0 {
		t.Errorf("faults after DELETE = %v", f)
	}

	// Stats.
	st := ctl("GET", "/stats", "")
	wantFields(t, st, "requests", "mints", "orphaned", "inFlight", "maxInFlight")
	if st["mints"].(map[string]any)[EndpointAccessKey] != 1.0 || st["requests"].(map[string]any)[EndpointAPIToken] != 2.0 {
		t.Errorf("stats = %v", st)
	}
	wantFields(t, ctl("POST", "/reset-stats", ""))
	if st := ctl("GET", "/stats", ""); len(st["requests"].(map[string]any)) != 0 || st["maxInFlight"] != 0.0 {
		t.Errorf("stats after reset = %v (control requests must not count)", st)
	}

	// Bad control requests.
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/api-tokens", `{"token":"t","principal":"p"}`},
		{"POST", "/api-tokens", `{"token":"t","principal":"p","orgId":"o","extra":1}`},
		{"POST", "/api-tokens", `{"token":`},
		{"POST", "/api-tokens", `{"token":"t","principal":"p","orgId":"o"} {}`},
		{"POST", "/api-tokens", ``},
		{"POST", "/oidc-issuers", `{"issuer":"https://x"}`},
		{"POST", "/oidc-issuers", `{"issuer":"https://x","orgId":"o","keys":{"keys":[{"kty":"nope"}]}}`},
		{"POST", "/saml-configs", `{"orgId":"o"}`},
		{"PUT", "/latency", `{}`},
		{"PUT", "/latency", `{"latency":"fast"}`},
		{"PUT", "/latency", `{"latency":"-1s"}`},
		{"PUT", "/latency", `{"latency":1e300}`},
		{"PUT", "/reply-latency", `{}`},
		{"PUT", "/reply-latency", `{"latency":"-1s"}`},
		{"PUT", "/reply-latency", `{"replyLatency":"1s"}`},
		{"POST", "/faults", `{"endpoint":"list-access-keys"}`},
		{"POST", "/faults", `{"status":200}`},
		{"POST", "/faults", `{"code":17}`},
		{"POST", "/faults", `{"retryAfter":"-2s"}`},
		{"POST", "/faults", `{"retryAfter":true}`},
		{"POST", "/faults", `{"delay":"-1s"}`},
	} {
		wantError(t, e.do(tc.method, "/_emulator"+tc.path, "", tc.body), 400, 3, "")
	}
	if f := e.emu.Faults(); len(f) != 0 {
		t.Errorf("rejected fault requests queued %v", f)
	}
}
