package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// pendingServer is a Server with a token-mode workload profile "wl" on a
// real broker.Cache whose upstream refuses every token (403, as CoreWeave
// refuses a forged one) unless it is benchWorkloadToken, with a bound of
// two identities without a key per peer.
func pendingServer(t *testing.T, logs *syncBuffer) (*Server, *int) {
	t.Helper()
	exp := time.Now().Add(time.Hour)
	mints := new(int) // under the broker's budget: one mint at a time per identity, all on t's goroutine
	cache, err := broker.NewCache([]broker.CacheProfile{{Name: "wl", Source: cwapi.SourceWorkloadOIDC, Workload: &broker.WorkloadSpec{
		Check: func(context.Context, string) (broker.Identity, error) {
			return broker.Identity{Issuer: "https://issuer.example", Subject: "system:serviceaccount:ml:loader", Expires: exp}, nil
		},
		Mint: func(_ context.Context, token string, _ broker.Identity) (*cwapi.Credentials, error) {
			*mints++
			if token != benchWorkloadToken {
				return nil, &cwapi.APIError{Endpoint: cwapi.PathOIDCCreds, StatusCode: http.StatusForbidden, Message: "invalid token"}
			}
			return &cwapi.Credentials{AccessKeyID: "CWAKIDEXAMPLE0001", SecretAccessKey: "cwoSECRETEXAMPLEVALUE", Expires: exp}, nil
		},
	}}}, func(o *broker.CacheOptions) { o.MaxPendingTokensPerPeer = 2 })
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.Nop()
	if logs != nil {
		log = zerolog.New(logs).Level(zerolog.InfoLevel)
	}
	return New(log, cache, Options{ClientTokens: map[string]string{"wl": ""}, Access: map[string]Access{"wl": {Pods: true}}}), mints
}

// fromPod is r as a pod at addr sends it (a peer beyond loopback, which a
// workload profile serves).
func fromPod(r *http.Request, addr string) *http.Request {
	r = r.WithContext(context.WithValue(r.Context(), connPeerKey{}, peerKey{addr: netip.MustParseAddr(addr)}))
	r.RemoteAddr = addr + ":40000"
	return r
}

// A peer past its bound of new tokens without a key gets 429
// TooManyPendingTokens, with no upstream call, recorded by the audit
// trail; another peer is served.
func TestWorkloadTooManyPendingTokens(t *testing.T) {
	logs := &syncBuffer{}
	s, mints := pendingServer(t, logs)
	for i := range 2 {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, fromUID(credsRequest("wl", "forged-"+strconv.Itoa(i)), 1001))
		checkJSONError(t, rec, http.StatusForbidden, codeTokenRejected)
	}
	for _, tc := range []struct {
		r      *http.Request
		status int
		code   string
	}{
		{fromUID(credsRequest("wl", "forged-2"), 1001), http.StatusTooManyRequests, codeTooManyPendingTokens},
		{fromPod(credsRequest("wl", "forged-3"), "10.4.0.17"), http.StatusForbidden, codeTokenRejected},
		{fromPod(credsRequest("wl", "forged-4"), "10.4.0.17"), http.StatusForbidden, codeTokenRejected},
		{fromPod(credsRequest("wl", "forged-5"), "10.4.0.17"), http.StatusTooManyRequests, codeTooManyPendingTokens},
		{fromPod(credsRequest("wl", "forged-6"), "10.4.0.17"), http.StatusTooManyRequests, codeTooManyPendingTokens},
	} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, tc.r)
		msg := checkJSONError(t, rec, tc.status, tc.code)
		if tc.status == http.StatusTooManyRequests && !strings.Contains(msg, "retry in a minute") {
			t.Errorf("message %q does not say what to do", msg)
		}
	}
	if *mints != 4 {
		t.Errorf("upstream mints = %d, want 4 (two per peer)", *mints)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, fromUID(credsRequest("wl", benchWorkloadToken), 1002))
	if rec.Code != http.StatusOK {
		t.Errorf("another local user: status %d, want 200 (body %s)", rec.Code, rec.Body)
	}
	var refusals []map[string]any
	for _, l := range logLines(t, logs) {
		if l["event"] == "credential_refusal" && strings.Contains(l["reason"].(string), "too many new tokens") {
			refusals = append(refusals, l)
		}
	}
	if len(refusals) != 2 || refusals[0]["peer_uid"] != 1001.0 || refusals[1]["peer"] != "address 10.4.0.17" {
		t.Errorf("audit refusal lines %v, want one for uid 1001 and one for the pod (the second request of the pod is summarised)", refusals)
	}
}

// TestHandlerHitAllocsWorkload: a workload identity's cache hit through the
// full handler allocates nothing, from a local user and from a pod.
func TestHandlerHitAllocsWorkload(t *testing.T) {
	s, _ := pendingServer(t, nil)
	// The first request of each is the mint.
	assertHitsAllocNothing(t, s, "workload cache hit", true,
		fromUID(credsRequest("wl", benchWorkloadToken), 1000),
		fromPod(credsRequest("wl", benchWorkloadToken), "10.4.0.17"))
}
