// Package metrics exports the daemon's Prometheus metrics. It implements
// the observer interfaces broker and server define (broker.Observer,
// cwapi.UpstreamObserver, server.RequestMetrics), so those packages do not
// depend on Prometheus, and it reads each profile's cache state at scrape
// time for the per-profile gauges.
//
// Every label value is bounded: profile is a configured profile name (or
// UnknownProfile), endpoint is an upstream path constant, and outcome and
// result come from fixed sets. No metric ever carries a token, a key id or
// anything a request supplied.
//
// Metrics registers into the registry it is given; it never touches the
// default registry.
package metrics

import (
	"errors"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/idtoken"
	"github.com/cwcreds/cwcreds/server"
)

const namespace = "cwcreds"

// UnknownProfile is the profile label of credential requests that name no
// configured profile. Profile names cannot start with '_', so it never
// collides with one.
const UnknownProfile = "_unknown"

// Cache results (the result label of cwcreds_cache_requests_total).
const (
	resultHit   = "hit"
	resultStale = "stale"
	resultMiss  = "miss"
)

// upstreamBuckets covers a fast mint (tens of ms) up to broker.MintTimeout.
var upstreamBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20}

// Metrics holds the daemon's collectors. Build it with New; it is safe for
// concurrent use.
type Metrics struct {
	requests        *prometheus.CounterVec
	cacheRequests   *prometheus.CounterVec
	mints           *prometheus.CounterVec
	mintsInFlight   prometheus.Gauge
	upstreamCalls   *prometheus.CounterVec
	upstreamLatency *prometheus.HistogramVec
	mintTriggers    *prometheus.CounterVec
	evictions       *prometheus.CounterVec
	tokensRefused   *prometheus.CounterVec
	keyChecks       *prometheus.CounterVec
	orphanReaps     *prometheus.CounterVec
	orphansRevoked  *prometheus.CounterVec
	reg             prometheus.Registerer
}

var (
	_ broker.Observer        = (*Metrics)(nil)
	_ cwapi.UpstreamObserver = (*Metrics)(nil)
	_ server.RequestMetrics  = (*Metrics)(nil)
	_ broker.CheckObserver   = (*profileObserver)(nil)
	_ broker.ReapObserver    = (*profileObserver)(nil)
)

// New registers the daemon's metrics, including cwcreds_build_info for
// version, in reg.
func New(reg prometheus.Registerer, version string) (*Metrics, error) {
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "credential_requests_total",
			Help: "Credential requests by profile and outcome (ok, unauthorized, unknown_profile, no_valid_key, error). " +
				"Requests for unconfigured profiles count under profile=\"" + UnknownProfile + "\".",
		}, []string{"profile", "outcome"}),
		cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_requests_total",
			Help: "Cache lookups by profile and result: hit (cached key served), stale (cached key served while " +
				"refreshing it is failing) or miss (no servable key: waited for a mint or refused during backoff).",
		}, []string{"profile", "result"}),
		mints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "mints_total",
			Help: "Upstream key mints (first mints, refreshes, retries and re-mints after a revoke) by profile and " +
				"result (ok or error). result=\"error\" counts refresh failures.",
		}, []string{"profile", "result"}),
		mintsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "mints_in_flight",
			Help: "Upstream mints in progress (at most one per profile).",
		}),
		upstreamCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_requests_total",
			Help: "Calls to the CoreWeave API by endpoint path and outcome: ok, the gRPC code name of an error " +
				"reply, its HTTP status class (http_4xx, ...), or timeout, canceled, network, bad_reply.",
		}, []string{"endpoint", "outcome"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_request_duration_seconds",
			Help:    "Latency of calls to the CoreWeave API, by endpoint path, whatever the outcome.",
			Buckets: upstreamBuckets,
		}, []string{"endpoint"}),
		mintTriggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "mints_started_total",
			Help: "Upstream mints started, by profile and trigger: request (a client found no key), refresh " +
				"(the background loop: first key, refresh or retry) or revoke.",
		}, []string{"profile", "trigger"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "workload_identities_dropped_total",
			Help: "Workload identities dropped from the cache, by profile and reason: expired (no unexpired " +
				"token left), lru (the cache was full: CWCREDS_MAX_WORKLOAD_IDENTITIES) or removed (profile " +
				"removed, replaced or shut down).",
		}, []string{"profile", "reason"}),
		tokensRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "workload_tokens_refused_total",
			Help: "Workload tokens refused locally, with no upstream call, by profile and reason (malformed, " +
				"issuer, audience, expired, not_yet_valid, algorithm, signature, keys_unavailable, " +
				"or too_many_pending: the peer already has its bound of new tokens that hold no key).",
		}, []string{"profile", "reason"}),
	}
	m.keyChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "s3_key_checks_total",
		Help: "Verdicts of the S3 check of new keys (CWCREDS_S3_ENDPOINT) by profile and verdict: accepted, " +
			"refused (S3 answered an error other than propagation, or InvalidAccessKeyId past the limit) or " +
			"unanswered (S3 could not be asked).",
	}, []string{"profile", "verdict"})
	m.orphanReaps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "orphan_reaps_total",
		Help: "Searches for keys a timed-out mint left upstream, by profile and result: ok, failed (listing or " +
			"revoking failed) or refused (more candidates than one mint can leave: none revoked).",
	}, []string{"profile", "result"})
	m.orphansRevoked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "orphan_keys_revoked_total",
		Help: "Keys a timed-out mint left upstream that the daemon revoked, by profile.",
	}, []string{"profile"})
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the labels give the cwcreds version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	for _, c := range []prometheus.Collector{m.requests, m.cacheRequests, m.mints, m.mintsInFlight,
		m.upstreamCalls, m.upstreamLatency, m.mintTriggers, m.evictions, m.tokensRefused,
		m.keyChecks, m.orphanReaps, m.orphansRevoked, buildInfo} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Profile implements broker.Observer: it resolves the profile's series once.
func (m *Metrics) Profile(name string) broker.ProfileObserver {
	return &profileObserver{
		hit:           m.cacheRequests.WithLabelValues(name, resultHit),
		stale:         m.cacheRequests.WithLabelValues(name, resultStale),
		miss:          m.cacheRequests.WithLabelValues(name, resultMiss),
		mintOK:        m.mints.WithLabelValues(name, "ok"),
		mintErr:       m.mints.WithLabelValues(name, "error"),
		mintsInFlight: m.mintsInFlight,
		m:             m,
		name:          name,
	}
}

type profileObserver struct {
	hit, stale, miss prometheus.Counter
	mintOK, mintErr  prometheus.Counter
	mintsInFlight    prometheus.Gauge
	// For the rarer events, resolved when they happen.
	m    *Metrics
	name string
}

// KeyChecked implements broker.CheckObserver. Checks are rare (one per
// new key), so the series is looked up per call.
func (p *profileObserver) KeyChecked(verdict string, _ time.Duration) {
	p.m.keyChecks.WithLabelValues(p.name, verdict).Inc()
}

// OrphansReaped implements broker.ReapObserver.
func (p *profileObserver) OrphansReaped(result string, revoked int) {
	p.m.orphanReaps.WithLabelValues(p.name, result).Inc()
	p.m.orphansRevoked.WithLabelValues(p.name).Add(float64(revoked))
}

func (p *profileObserver) Hit()      { p.hit.Inc() }
func (p *profileObserver) StaleHit() { p.stale.Inc() }
func (p *profileObserver) Miss()     { p.miss.Inc() }
func (p *profileObserver) MintStarted(trigger string) {
	p.mintsInFlight.Inc()
	p.m.mintTriggers.WithLabelValues(p.name, trigger).Inc()
}

func (p *profileObserver) IdentityAdded() {}

func (p *profileObserver) IdentityEvicted(why string) {
	p.m.evictions.WithLabelValues(p.name, why).Inc()
}

func (p *profileObserver) TokenRefused(err error) {
	p.m.tokensRefused.WithLabelValues(p.name, tokenReason(err)).Inc()
}

func (p *profileObserver) MintDone(err error) {
	p.mintsInFlight.Dec()
	if err != nil {
		p.mintErr.Inc()
	} else {
		p.mintOK.Inc()
	}
}

// DeleteProfile deletes every series of a profile the configuration no
// longer has, so /metrics names only configured profiles. A request or
// mint still in flight for it counts nowhere.
func (m *Metrics) DeleteProfile(name string) {
	l := prometheus.Labels{"profile": name}
	m.requests.DeletePartialMatch(l)
	m.cacheRequests.DeletePartialMatch(l)
	m.mints.DeletePartialMatch(l)
	m.mintTriggers.DeletePartialMatch(l)
	m.evictions.DeletePartialMatch(l)
	m.tokensRefused.DeletePartialMatch(l)
	m.keyChecks.DeletePartialMatch(l)
	m.orphanReaps.DeletePartialMatch(l)
	m.orphansRevoked.DeletePartialMatch(l)
}

// UpstreamCall implements cwapi.UpstreamObserver.
func (m *Metrics) UpstreamCall(endpoint, outcome string, took time.Duration) {
	m.upstreamCalls.WithLabelValues(endpoint, outcome).Inc()
	m.upstreamLatency.WithLabelValues(endpoint).Observe(took.Seconds())
}

// Requests implements server.RequestMetrics: it resolves the series of
// every outcome for profile once; "" stands for unconfigured profiles.
func (m *Metrics) Requests(profile string) server.RequestCounter {
	if profile == "" {
		profile = UnknownProfile
	}
	var c requestCounter
	for o := range server.NumOutcomes {
		c[o] = m.requests.WithLabelValues(profile, o.String())
	}
	return &c
}

type requestCounter [server.NumOutcomes]prometheus.Counter

func (c *requestCounter) Count(o server.Outcome) {
	if o < server.NumOutcomes {
		c[o].Inc()
	}
}

// StatusSource reports every profile's state; *broker.Cache satisfies it.
type StatusSource interface {
	Status() []broker.Status
}

// WatchProfiles registers the per-profile gauges, computed from
// src.Status() at each scrape (no goroutine, no upstream call):
//
//	cwcreds_key_expiry_seconds{profile}           seconds until the cached key expires (0 with no key)
//	cwcreds_profile_healthy{profile}              1 when the profile holds a servable key
//	cwcreds_consecutive_mint_failures{profile}    failed mints since the last success
//	cwcreds_key_s3_refused{profile}               1 when S3 refuses the profile's newest key
//
// now reads the clock; nil means time.Now.
func (m *Metrics) WatchProfiles(src StatusSource, now func() time.Time) error {
	if now == nil {
		now = time.Now
	}
	return m.reg.Register(&profileCollector{
		src: src,
		now: now,
		expiry: prometheus.NewDesc(namespace+"_key_expiry_seconds",
			"Seconds until the profile's cached key expires upstream; 0 when it holds none.", []string{"profile"}, nil),
		healthy: prometheus.NewDesc(namespace+"_profile_healthy",
			"1 when the profile holds a key that may be served now, else 0.", []string{"profile"}, nil),
		failures: prometheus.NewDesc(namespace+"_consecutive_mint_failures",
			"Failed mints since the profile's last successful one.", []string{"profile"}, nil),
		identities: prometheus.NewDesc(namespace+"_workload_identities",
			"Workload identities (source workload-oidc) holding a cache entry, by profile.", []string{"profile"}, nil),
		s3Refused: prometheus.NewDesc(namespace+"_key_s3_refused",
			"1 when the S3 check (CWCREDS_S3_ENDPOINT) found that S3 refuses the profile's newest key, else 0.",
			[]string{"profile"}, nil),
	})
}

// profileCollector reads the cache state at scrape time.
type profileCollector struct {
	src                                   StatusSource
	now                                   func() time.Time
	expiry, healthy, failures, identities *prometheus.Desc
	s3Refused                             *prometheus.Desc
}

func (c *profileCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	ch <- c.healthy
	ch <- c.failures
	ch <- c.identities
	ch <- c.s3Refused
}

func (c *profileCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for _, st := range c.src.Status() {
		if st.Workload != nil {
			// A key per identity: no one expiry or failure count, and the
			// key alerts must not fire for a profile that holds none.
			ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, 1, st.Profile)
			ch <- prometheus.MustNewConstMetric(c.identities, prometheus.GaugeValue, float64(st.Workload.Identities), st.Profile)
			continue
		}
		left := 0.0
		if st.Expiration != nil {
			left = max(0, st.Expiration.Sub(now).Seconds())
		}
		healthy := 0.0
		if st.Healthy {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, left, st.Profile)
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, healthy, st.Profile)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.GaugeValue, float64(st.ConsecutiveFailures), st.Profile)
		refused := 0.0
		if st.S3Check == "refused" {
			refused = 1
		}
		ch <- prometheus.MustNewConstMetric(c.s3Refused, prometheus.GaugeValue, refused, st.Profile)
	}
}

// tokenReason is the reason label of a refused workload token: one of
// idtoken.Reasons, too_many_pending (broker.ErrTooManyPendingTokens), or
// "other".
func tokenReason(err error) string {
	if r := idtoken.ReasonOf(err); r != "" {
		return string(r)
	}
	if errors.Is(err, broker.ErrTokenExpired) {
		return string(idtoken.ReasonExpired)
	}
	if errors.Is(err, broker.ErrTooManyPendingTokens) {
		return "too_many_pending"
	}
	return "other"
}
