package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/server"
)

const (
	testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	apiToken  = "CW-SECRET-metrics"
)

func newTestMetrics(t testing.TB) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(reg, "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// switchMinter mints hour-long keys until err is set.
type switchMinter struct {
	mu  sync.Mutex
	err error
	n   int
}

func (s *switchMinter) Mint(context.Context) (*cwapi.Credentials, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	s.n++
	return &cwapi.Credentials{AccessKeyID: fmt.Sprintf("CWKEY%04d", s.n), SecretAccessKey: "cwoSECRET",
		Expires: time.Now().Add(time.Hour).UTC()}, nil
}

func (s *switchMinter) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func TestCacheMetricsAfterHitMissFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, reg := newTestMetrics(t)
		mint := &switchMinter{}
		c, err := broker.NewCache([]broker.CacheProfile{{Name: "train", Source: cwapi.SourceAccessKey, Minter: mint}},
			func(o *broker.CacheOptions) { o.Observer = m; o.Rand = func() float64 { return 0 } })
		if err != nil {
			t.Fatal(err)
		}
		if err := m.WatchProfiles(c, nil); err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		counter := func(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }
		hit := m.cacheRequests.WithLabelValues("train", "hit")
		stale := m.cacheRequests.WithLabelValues("train", "stale")
		miss := m.cacheRequests.WithLabelValues("train", "miss")
		mintOK := m.mints.WithLabelValues("train", "ok")
		mintErr := m.mints.WithLabelValues("train", "error")
		check := func(step string, wantHit, wantStale, wantMiss, wantOK float64) {
			t.Helper()
			if h, s, mi, ok := counter(hit), counter(stale), counter(miss), counter(mintOK); h != wantHit || s != wantStale || mi != wantMiss || ok != wantOK {
				t.Errorf("%s: hit %v stale %v miss %v mints ok %v; want %v %v %v %v", step, h, s, mi, ok, wantHit, wantStale, wantMiss, wantOK)
			}
			if got := counter(m.mintsInFlight); got != 0 {
				t.Errorf("%s: mints in flight = %v, want 0", step, got)
			}
		}

		// Miss: the cold profile mints once.
		if _, err := c.Get(ctx, "train"); err != nil {
			t.Fatal(err)
		}
		check("cold get", 0, 0, 1, 1)
		// Hits.
		for range 3 {
			c.Get(ctx, "train")
		}
		check("three hits", 3, 0, 1, 1)
		time.Sleep(10 * time.Minute)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cwcreds_key_expiry_seconds Seconds until the profile's cached key expires upstream; 0 when it holds none.
# TYPE cwcreds_key_expiry_seconds gauge
cwcreds_key_expiry_seconds{profile="train"} 3000
# HELP cwcreds_profile_healthy 1 when the profile holds a key that may be served now, else 0.
# TYPE cwcreds_profile_healthy gauge
cwcreds_profile_healthy{profile="train"} 1
# HELP cwcreds_consecutive_mint_failures Failed mints since the profile's last successful one.
# TYPE cwcreds_consecutive_mint_failures gauge
cwcreds_consecutive_mint_failures{profile="train"} 0
`), "cwcreds_key_expiry_seconds", "cwcreds_profile_healthy", "cwcreds_consecutive_mint_failures"); err != nil {
			t.Errorf("per-profile gauges at 10 min: %v", err)
		}

		// Failure: upstream goes down; past the refresh point the refresh
		// fails and the still-valid key is served stale.
		mint.fail(errors.New("upstream down"))
		ctxRun, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { c.Run(ctxRun); close(done) }()
		time.Sleep(31 * time.Minute) // 41 min: the refresh at 40 min failed
		synctest.Wait()
		c.Get(ctx, "train")
		check("get while refresh fails", 3, 1, 1, 1)
		if counter(mintErr) < 1 {
			t.Errorf("failed mints = %v, want at least 1", counter(mintErr))
		}
		// Past the serve margin: misses, and the profile is unhealthy.
		time.Sleep(18*time.Minute + 30*time.Second) // 59m30s: inside the 1-minute serve margin
		synctest.Wait()
		if _, err := c.Get(ctx, "train"); !errors.Is(err, broker.ErrNoValidKey) {
			t.Fatalf("Get after the serve margin = %v, want ErrNoValidKey", err)
		}
		check("expired", 3, 1, 2, 1)
		out := gatherText(t, reg)
		for _, want := range []string{`cwcreds_profile_healthy{profile="train"} 0`, `cwcreds_key_expiry_seconds{profile="train"} 30`} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("metrics lack %s", want)
			}
		}
		stop()
		<-done
	})
}

func TestUpstreamMetricsAgainstEmulator(t *testing.T) {
	m, reg := newTestMetrics(t)
	emu := cwapitest.New(cwapitest.Options{})
	emu.AddAPIToken(apiToken, cwapitest.Identity{Principal: "coreweave/u1", OrgID: "cw1"})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	c, err := cwapi.NewClient(srv.URL, func(o *cwapi.ClientOptions) { o.Observer = m })
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	k, err := c.CreateAccessKey(ctx, apiToken, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateAccessKey(ctx, "CW-SECRET-unknown", time.Hour, nil); err == nil {
		t.Fatal("mint with an unknown token succeeded")
	}
	emu.InjectFault(cwapitest.Fault{Status: 503, Count: 1})
	c.CreateAccessKey(ctx, apiToken, time.Hour, nil)
	emu.InjectFault(cwapitest.Fault{Status: 502, Code: -1, Count: 1})
	if err := c.RevokeAccessKey(ctx, apiToken, k.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	c.CreateAccessKey(ctx, apiToken, time.Hour, nil)

	tests := []struct {
		endpoint, outcome string
		want              float64
	}{
		{cwapi.PathAccessKey, "ok", 1},
		{cwapi.PathAccessKey, "UNAUTHENTICATED", 1},
		{cwapi.PathAccessKey, "UNAVAILABLE", 1},
		{cwapi.PathAccessKey, "network", 1},
		{cwapi.PathRevokeByKey, "ok", 1},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(m.upstreamCalls.WithLabelValues(tt.endpoint, tt.outcome)); got != tt.want {
			t.Errorf("upstream_requests_total{endpoint=%q,outcome=%q} = %v, want %v", tt.endpoint, tt.outcome, got, tt.want)
		}
	}
	if got := testutil.CollectAndCount(m.upstreamLatency); got != 2 {
		t.Errorf("latency histograms = %d series, want 2 (one per endpoint called)", got)
	}
	out := gatherText(t, reg)
	for _, secret := range []string{apiToken, "CW-SECRET", k.AccessKeyID, k.SecretAccessKey} {
		if strings.Contains(out, secret) {
			t.Errorf("metrics output contains %q", secret)
		}
	}
}

func TestRequestMetricsBoundedProfileLabel(t *testing.T) {
	m, reg := newTestMetrics(t)
	keys := fixedKeys{creds: &cwapi.Credentials{AccessKeyID: "CWAKIDEXAMPLE0001", SecretAccessKey: "cwoSECRET", Expires: time.Now().Add(time.Hour)}}
	s := server.New(zerolog.Nop(), keys, server.Options{ClientTokens: map[string]string{"train": testToken}, Requests: m})
	get := func(profile, token string) int {
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:7911/v1/credentials/"+profile, nil)
		r.RemoteAddr = "127.0.0.1:40000" // a local client (httptest's default peer is beyond loopback: a pod)
		if token != "" {
			r.Header.Set("Authorization", token)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		return rec.Code
	}
	get("train", testToken)
	get("train", testToken)
	get("train", "wrong")
	get("attacker-chosen-name", testToken)
	get("another-one", "")
	tests := []struct {
		profile, outcome string
		want             float64
	}{
		{"train", "ok", 2},
		{"train", "unauthorized", 1},
		{"train", "no_valid_key", 0},
		{UnknownProfile, "unknown_profile", 2},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(tt.profile, tt.outcome)); got != tt.want {
			t.Errorf("credential_requests_total{profile=%q,outcome=%q} = %v, want %v", tt.profile, tt.outcome, got, tt.want)
		}
	}
	out := gatherText(t, reg)
	for _, raw := range []string{"attacker-chosen-name", "another-one", testToken, "wrong", "CWAKIDEXAMPLE0001"} {
		if strings.Contains(out, raw) {
			t.Errorf("metrics output contains request input or a key id %q", raw)
		}
	}
}

type fixedKeys struct{ creds *cwapi.Credentials }

func (f fixedKeys) Get(context.Context, string) (*cwapi.Credentials, error) { return f.creds, nil }
func (f fixedKeys) Status() []broker.Status                                 { return nil }

func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	s := server.New(zerolog.Nop(), fixedKeys{}, server.Options{Metrics: handlerFor(reg)})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1:7911/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func handlerFor(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
