package server

import (
	"net/http"
	"testing"

	"github.com/cwcreds/cwcreds/broker"
)

// metricsOnlyServer is a Server with every optional route on (metrics,
// IMDS, revoke), so its metrics handler is shown to expose none of the
// others.
func metricsOnlyServer(t *testing.T) (*Server, *fakeKeys, *fakeRevoker) {
	t.Helper()
	keys := &fakeKeys{creds: testCreds(), status: []broker.Status{
		{Profile: testProfile, Healthy: false, Reason: "first mint failed: upstream 503"},
	}}
	rev := &fakeRevoker{}
	s, _ := newTestServer(t, keys, func(o *Options) {
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("metrics\n")) })
		o.IMDSProfile = testProfile
		o.Revoker, o.AdminToken = rev, adminToken
	})
	return s, keys, rev
}

// TestMetricsHandlerServesOnlyItsRoutes: GET /metrics, /healthz and
// /readyz answer exactly as on the Server; every credential, status, IMDS
// and revoke path is 404, even with a valid token, and never reaches the
// broker or the revoker.
func TestMetricsHandlerServesOnlyItsRoutes(t *testing.T) {
	s, keys, rev := metricsOnlyServer(t)
	h := s.MetricsHandler()

	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		got, want := serve(h, request(http.MethodGet, path)), serve(s, request(http.MethodGet, path))
		if got.Code != want.Code || got.Body.String() != want.Body.String() || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("GET %s = %d %q, want the Server's %d %q", path, got.Code, got.Body, want.Code, want.Body)
		}
	}
	if rec := serve(h, request(http.MethodGet, "/metrics")); rec.Code != http.StatusOK || rec.Body.String() != "metrics\n" {
		t.Errorf("GET /metrics = %d %q, want the metrics handler's 200", rec.Code, rec.Body)
	}
	if rec := serve(h, request(http.MethodGet, "/readyz")); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with an unhealthy profile = %d, want 503 as on the Server", rec.Code)
	}
	callsBefore := keys.calls

	for _, r := range []*http.Request{
		credsRequest(testProfile, testToken),
		credsRequest("no-such-profile", testToken),
		request(http.MethodGet, "/v1/profiles"),
		adminRevokeRequest(testProfile, adminToken, ""),
		request(http.MethodPut, imdsTokenPath, "X-aws-ec2-metadata-token-ttl-seconds", "60"),
		request(http.MethodGet, imdsCredsPath+"/"),
		request(http.MethodGet, imdsCredsPath+"/"+testProfile),
		request(http.MethodGet, "/"),
		request(http.MethodGet, "/metrics/"),
		request(http.MethodGet, "/debug/pprof/"),
		request(http.MethodOptions, "*"),
	} {
		rec := serve(h, r)
		checkJSONError(t, rec, http.StatusNotFound, codeNotFound)
	}
	if keys.calls != callsBefore || rev.calls != 0 {
		t.Errorf("broker called %d times, revoker %d times, want never", keys.calls-callsBefore, rev.calls)
	}
}

// TestMetricsHandlerMethods: only GET; HEAD and POST on its own routes
// are 405 with Allow: GET, as on the Server.
func TestMetricsHandlerMethods(t *testing.T) {
	s, _, _ := metricsOnlyServer(t)
	h := s.MetricsHandler()
	for _, m := range []string{http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete} {
		for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
			rec := serve(h, request(m, path))
			if m == http.MethodHead {
				if rec.Code != http.StatusMethodNotAllowed {
					t.Errorf("HEAD %s = %d, want 405", path, rec.Code)
				}
			} else {
				checkJSONError(t, rec, http.StatusMethodNotAllowed, codeMethodNotAllowed)
			}
			if got := rec.Header().Get("Allow"); got != http.MethodGet {
				t.Errorf("%s %s: Allow = %q, want GET", m, path, got)
			}
		}
	}
}

// TestMetricsHandlerHasNoGuard: a scraper that names the node by DNS,
// scrapes through a proxy, or is a person's browser, is answered: nothing
// served there is a secret (see MetricsHandler). The Server itself still
// refuses each of these.
func TestMetricsHandlerHasNoGuard(t *testing.T) {
	s, _, _ := metricsOnlyServer(t)
	h := s.MetricsHandler()
	for _, hdr := range [][]string{
		{"X-Forwarded-For", "10.1.2.3"},
		{"Via", "1.1 proxy"},
		{"Origin", "http://example.com"},
		{"Sec-Fetch-Site", "none"},
	} {
		r := request(http.MethodGet, "/metrics", hdr...)
		r.Host = "node-7.cluster.example:7913"
		if rec := serve(h, r); rec.Code != http.StatusOK {
			t.Errorf("GET /metrics with Host %s and %s = %d %s, want 200", r.Host, hdr[0], rec.Code, rec.Body)
		}
		if rec := serve(s, r); rec.Code != http.StatusForbidden {
			t.Errorf("the Server answered GET /metrics with Host %s and %s: %d, want 403", r.Host, hdr[0], rec.Code)
		}
	}
}

// TestMetricsHandlerWithoutMetrics: with no Options.Metrics, /metrics is
// 404 there too; health and readiness still answer.
func TestMetricsHandlerWithoutMetrics(t *testing.T) {
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()})
	h := s.MetricsHandler()
	checkJSONError(t, serve(h, request(http.MethodGet, "/metrics")), http.StatusNotFound, codeNotFound)
	if rec := serve(h, request(http.MethodGet, "/healthz")); rec.Code != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200", rec.Code)
	}
}
