package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// fakeMinter mints keys of a fixed lifetime after a fixed latency, or fails
// with err. It records every call. Its key ids start with prefix, so keys of
// different minters differ. Safe for concurrent use.
type fakeMinter struct {
	prefix   string
	mu       sync.Mutex
	lifetime time.Duration
	latency  time.Duration
	err      error
	calls    []time.Time
	n        atomic.Int64
}

func (m *fakeMinter) Mint(ctx context.Context) (*cwapi.Credentials, error) {
	m.mu.Lock()
	m.calls = append(m.calls, time.Now())
	lifetime, latency, err := m.lifetime, m.latency, m.err
	m.mu.Unlock()
	n := m.n.Add(1)
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return &cwapi.Credentials{
		AccessKeyID:     fmt.Sprintf("%sCWKEY%010d", m.prefix, n),
		SecretAccessKey: "cwoSECRETVALUE",
		Principal:       "coreweave/test",
		Expires:         time.Now().Add(lifetime).UTC(),
	}, nil
}

func (m *fakeMinter) setErr(err error) {
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
}

func (m *fakeMinter) count() int { return int(m.n.Load()) }

func (m *fakeMinter) callTimes() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Time(nil), m.calls...)
}

func newTestCache(t *testing.T, m cwapi.Minter) *Cache {
	t.Helper()
	c, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m}},
		func(o *CacheOptions) { o.Rand = func() float64 { return 0 } })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startRun runs c.Run in the bubble and returns a function that stops it
// and waits for it to return.
func startRun(c *Cache) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func TestGetColdHerdMintsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, latency: 200 * time.Millisecond}
		c := newTestCache(t, m)
		const n = 1000
		var wg sync.WaitGroup
		keys := make([]*cwapi.Credentials, n)
		errs := make([]error, n)
		start := time.Now()
		for i := range n {
			wg.Go(func() { keys[i], errs[i] = c.Get(t.Context(), "p") })
		}
		wg.Wait()
		if got := m.count(); got != 1 {
			t.Fatalf("upstream mints = %d, want 1", got)
		}
		for i := range n {
			if errs[i] != nil || keys[i] != keys[0] {
				t.Fatalf("Get #%d = %v, %v; want the shared key", i, keys[i], errs[i])
			}
		}
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("herd took %s, want exactly the upstream latency", took)
		}
	})
}

func TestGetLateCallerAfterFlightDoesNotMintAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		c := newTestCache(t, m)
		for range 5 {
			if _, err := c.Get(t.Context(), "p"); err != nil {
				t.Fatal(err)
			}
		}
		if got := m.count(); got != 1 {
			t.Errorf("mints = %d, want 1", got)
		}
	})
}

func TestCallerCancelDoesNotCancelSharedMint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, latency: time.Second}
		c := newTestCache(t, m)
		ctxA, cancelA := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancelA()
		var errA, errB error
		var keyB *cwapi.Credentials
		var wg sync.WaitGroup
		wg.Go(func() { _, errA = c.Get(ctxA, "p") })
		wg.Go(func() { keyB, errB = c.Get(t.Context(), "p") })
		wg.Wait()
		if !errors.Is(errA, context.DeadlineExceeded) {
			t.Errorf("impatient caller: err = %v, want DeadlineExceeded", errA)
		}
		if errB != nil || keyB == nil {
			t.Fatalf("patient caller: %v, %v; want a key", keyB, errB)
		}
		if got := m.count(); got != 1 {
			t.Errorf("mints = %d, want 1", got)
		}
	})
}

func TestRefreshAtTwoThirdsOfLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: 60 * time.Minute}
		c := newTestCache(t, m)
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		if got := m.count(); got != 1 {
			t.Fatalf("after start: mints = %d, want 1 (warm-up)", got)
		}
		first, _ := c.Get(t.Context(), "p")
		time.Sleep(40*time.Minute - time.Nanosecond)
		synctest.Wait()
		if got := m.count(); got != 1 {
			t.Fatalf("just before 2/3 of lifetime: mints = %d, want 1", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := m.count(); got != 2 {
			t.Fatalf("at 2/3 of lifetime: mints = %d, want 2", got)
		}
		second, _ := c.Get(t.Context(), "p")
		if second == first {
			t.Errorf("Get still serves the old key after refresh")
		}
		// And again two thirds into the second key's life.
		time.Sleep(40 * time.Minute)
		synctest.Wait()
		if got := m.count(); got != 3 {
			t.Errorf("second refresh: mints = %d, want 3", got)
		}
	})
}

func TestRefreshJitterOnlyMovesEarlier(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := now.Add(90 * time.Minute)
	for _, r := range []float64{0, 0.5, 0.999} {
		refreshAt, serveUntil := schedule(now, exp, r)
		latest := now.Add(60 * time.Minute)
		earliest := latest.Add(-time.Duration(float64(90*time.Minute) * RefreshJitter))
		if refreshAt.After(latest) || refreshAt.Before(earliest) {
			t.Errorf("schedule(r=%v) refreshAt = %s, want within [%s, %s]", r, refreshAt, earliest, latest)
		}
		if want := exp.Add(-ServeMargin); !serveUntil.Equal(want) {
			t.Errorf("serveUntil = %s, want %s", serveUntil, want)
		}
	}
}

func TestServeMarginScalesForShortKeys(t *testing.T) {
	tests := []struct {
		lifetime, want time.Duration
	}{
		{time.Hour, time.Minute},
		{15 * time.Minute, time.Minute},
		{5 * time.Minute, 30 * time.Second},
		{time.Minute, 6 * time.Second},
	}
	for _, tc := range tests {
		if got := serveMargin(tc.lifetime); got != tc.want {
			t.Errorf("serveMargin(%s) = %s, want %s", tc.lifetime, got, tc.want)
		}
	}
}

func TestWarmProfileNeverWaitsAcrossRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: 15 * time.Minute, latency: 5 * time.Second}
		c := newTestCache(t, m)
		stop := startRun(c)
		defer stop()
		time.Sleep(5 * time.Second) // warm-up mint
		synctest.Wait()
		// Poll every second through three refreshes: no Get may block.
		for i := range 35 * 60 {
			start := time.Now()
			k, err := c.Get(t.Context(), "p")
			if err != nil || k == nil {
				t.Fatalf("t=%ds: Get = %v, %v", i, k, err)
			}
			if d := time.Since(start); d != 0 {
				t.Fatalf("t=%ds: Get waited %s on upstream", i, d)
			}
			if left := time.Until(k.Expires); left < 15*time.Minute/3-5*time.Second {
				t.Fatalf("t=%ds: served key has %s left, want about a third of its life", i, left)
			}
			time.Sleep(time.Second)
		}
		// Warm-up done at 5s; each refresh starts 10 min after the previous
		// key arrived and takes 5s: 10m5s, 20m10s, 30m15s.
		if got := m.count(); got != 4 {
			t.Errorf("mints over 35 min of 15-min keys = %d, want 4 (warm-up + refresh every 10 min)", got)
		}
	})
}

func TestFailedRefreshKeepsServingValidKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: 60 * time.Minute}
		c := newTestCache(t, m)
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		good, err := c.Get(t.Context(), "p")
		if err != nil {
			t.Fatal(err)
		}
		m.setErr(&cwapi.APIError{Endpoint: cwapi.PathAccessKey, StatusCode: http.StatusServiceUnavailable, Code: 14, Message: "down"})
		// Upstream down from the refresh point to just before the margin.
		time.Sleep(59*time.Minute - time.Nanosecond)
		synctest.Wait()
		k, err := c.Get(t.Context(), "p")
		if err != nil || k != good {
			t.Fatalf("during outage: Get = %v, %v; want the still-valid key", k, err)
		}
		calls := m.count()
		if calls < 5 {
			t.Errorf("refresh attempts during a 19-minute outage = %d, want retries", calls)
		}
		// Retries are backed off: no two attempts closer than BackoffInitial/2.
		times := m.callTimes()
		for i := 2; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < BackoffInitial/2 {
				t.Fatalf("attempts %d and %d only %s apart", i-1, i, gap)
			}
			if gap := times[i].Sub(times[i-1]); gap > BackoffMax {
				t.Fatalf("attempts %d and %d are %s apart, more than BackoffMax", i-1, i, gap)
			}
		}
		// Past expiry minus the margin the key is no longer served.
		time.Sleep(time.Nanosecond)
		_, err = c.Get(t.Context(), "p")
		var ue *UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, ErrNoValidKey) {
			t.Fatalf("after margin: err = %v, want *UnavailableError", err)
		}
		if !errors.Is(err, ue.Err) || ue.Err == nil {
			t.Errorf("UnavailableError carries no reason: %v", err)
		}
		// Recovery: a fresh key within one backoff step.
		m.setErr(nil)
		time.Sleep(BackoffMax)
		synctest.Wait()
		if k, err := c.Get(t.Context(), "p"); err != nil || k == good {
			t.Errorf("after recovery: Get = %v, %v; want a fresh key", k, err)
		}
	})
}

func TestRejectedCredentialBacksOffFar(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, err: &cwapi.APIError{Endpoint: cwapi.PathAccessKey, StatusCode: http.StatusUnauthorized, Code: 16, Message: "invalid token"}}
		c := newTestCache(t, m)
		stop := startRun(c)
		defer stop()
		// Clients keep asking during the outage; none of them may reach upstream.
		for range 60 * 60 {
			_, err := c.Get(t.Context(), "p")
			if !errors.Is(err, ErrNoValidKey) {
				t.Fatalf("Get err = %v, want ErrNoValidKey", err)
			}
			time.Sleep(time.Second)
		}
		synctest.Wait()
		// With r=0 the waits are 30s, 60s, 120s, 240s, 450s, 450s, ...: in an
		// hour about 10 calls, never a hot loop.
		times := m.callTimes()
		if len(times) > 12 {
			t.Errorf("upstream calls in an hour with a revoked token = %d, want <= 12", len(times))
		}
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < RejectedBackoffInitial/2 {
				t.Fatalf("calls %d and %d only %s apart", i-1, i, gap)
			}
		}
		st := c.Status()[0]
		if st.Healthy || st.ConsecutiveFailures != len(times) || st.LastError == "" || st.NextAttempt == nil {
			t.Errorf("Status = %+v, want unhealthy with the failure and next attempt", st)
		}
	})
}

func TestRetryAfterHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, err: &cwapi.APIError{Endpoint: cwapi.PathAccessKey, StatusCode: http.StatusTooManyRequests, Code: 8, RetryAfter: 7 * time.Second}}
		c := newTestCache(t, m)
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		time.Sleep(7*time.Second - time.Nanosecond)
		synctest.Wait()
		if got := m.count(); got != 1 {
			t.Fatalf("before Retry-After: calls = %d, want 1", got)
		}
		m.setErr(nil)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := m.count(); got != 2 {
			t.Fatalf("at Retry-After: calls = %d, want 2", got)
		}
		if _, err := c.Get(t.Context(), "p"); err != nil {
			t.Errorf("after retry: %v", err)
		}
	})
}

func TestBackoff(t *testing.T) {
	unavailable := &cwapi.APIError{StatusCode: 503}
	revoked := &cwapi.APIError{StatusCode: 401}
	tests := []struct {
		name     string
		err      error
		failures int
		r        float64
		want     time.Duration
	}{
		{"first transient, no jitter", unavailable, 1, 0, BackoffInitial / 2},
		{"first transient, max jitter", unavailable, 1, 0.999999, BackoffInitial - 2*time.Microsecond},
		{"doubling", errors.New("dial tcp: refused"), 3, 0, 2 * BackoffInitial},
		{"capped", unavailable, 30, 0, BackoffMax / 2},
		{"rejected starts far", revoked, 1, 0, RejectedBackoffInitial / 2},
		{"rejected capped", revoked, 30, 0, RejectedBackoffMax / 2},
		{"retry-after honoured", &cwapi.APIError{StatusCode: 429, RetryAfter: 3 * time.Second}, 1, 0, 3 * time.Second},
		{"retry-after capped", &cwapi.APIError{StatusCode: 503, RetryAfter: 24 * time.Hour}, 1, 0, MaxRetryAfter},
		{"retry-after cannot shorten a rejection", &cwapi.APIError{StatusCode: 403, RetryAfter: time.Second}, 1, 0, RejectedBackoffInitial / 2},
		{"bad token file is transient", fmt.Errorf("%w: /x is empty", cwapi.ErrBadToken), 1, 0, BackoffInitial / 2},
		{"timed-out mint starts further", fmt.Errorf("mint: %w", context.DeadlineExceeded), 1, 0, TimedOutBackoffInitial / 2},
		{"network timeout starts further", &net.OpError{Op: "read", Err: timeoutErr{}}, 2, 0, TimedOutBackoffInitial},
		{"timed-out capped", context.DeadlineExceeded, 30, 0, BackoffMax / 2},
		{"upstream 504 is an answer, not a timeout", &cwapi.APIError{StatusCode: 504}, 1, 0, BackoffInitial / 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := backoff(tc.err, tc.failures, tc.r)
			if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("backoff = %s, want %s", got, tc.want)
			}
		})
	}
}

// A 429 pauses background mints for its Retry-After (capped), or
// BackoffInitial without one; nothing else pauses them.
func TestRateLimitPause(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration
	}{
		{"429 with retry-after", fmt.Errorf("mint: %w", &cwapi.APIError{StatusCode: 429, RetryAfter: 7 * time.Second}), 7 * time.Second},
		{"429 capped", &cwapi.APIError{StatusCode: 429, RetryAfter: 24 * time.Hour}, MaxRetryAfter},
		{"429 without retry-after", &cwapi.APIError{StatusCode: 429}, BackoffInitial},
		{"503 with retry-after", &cwapi.APIError{StatusCode: 503, RetryAfter: time.Minute}, 0},
		{"network", errors.New("connection refused"), 0},
		{"success", nil, 0},
	} {
		if got := rateLimitPause(tc.err); got != tc.want {
			t.Errorf("%s: rateLimitPause = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestGetDuringBackoffDoesNotCallUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, err: errors.New("connection refused")}
		c := newTestCache(t, m)
		for range 100 {
			_, err := c.Get(t.Context(), "p")
			if !errors.Is(err, ErrNoValidKey) {
				t.Fatalf("err = %v, want ErrNoValidKey", err)
			}
		}
		if got := m.count(); got != 1 {
			t.Errorf("calls = %d, want 1 (the rest inside backoff)", got)
		}
		m.setErr(nil)
		time.Sleep(BackoffInitial)
		if _, err := c.Get(t.Context(), "p"); err != nil {
			t.Errorf("after backoff: %v", err)
		}
	})
}

func TestUnknownProfile(t *testing.T) {
	c := newTestCache(t, &fakeMinter{lifetime: time.Hour})
	if _, err := c.Get(t.Context(), "nope"); !errors.Is(err, ErrUnknownProfile) {
		t.Errorf("err = %v, want ErrUnknownProfile", err)
	}
}

func TestMintedKeyChecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		short := &fakeMinter{lifetime: 5 * time.Second}
		c := newTestCache(t, short)
		if _, err := c.Get(t.Context(), "p"); !errors.Is(err, cwapi.ErrBadReply) {
			t.Errorf("key expiring in 5s: err = %v, want ErrBadReply", err)
		}

		permanent := cwapi.MinterFunc(func(context.Context) (*cwapi.Credentials, error) {
			return &cwapi.Credentials{AccessKeyID: "CWPERM", SecretAccessKey: "s"}, nil
		})
		c = newTestCache(t, permanent)
		k, err := c.Get(t.Context(), "p")
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Now().Add(PermanentKeyLifetime); !k.Expires.Equal(want) {
			t.Errorf("permanent key Expires = %s, want %s", k.Expires, want)
		}
	})
}

func TestRunShutdownCancelsInflightMint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, latency: time.Hour}
		c := newTestCache(t, m)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		synctest.Wait() // the warm-up mint is in flight
		start := time.Now()
		cancel()
		<-done
		if d := time.Since(start); d != 0 {
			t.Errorf("Run took %s to return after cancel, want immediately", d)
		}
		st := c.Status()[0]
		if st.LastError == "" {
			t.Errorf("cancelled mint left no error in status")
		}
	})
}

func TestStatusNeverHoldsSecret(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, &fakeMinter{lifetime: time.Hour})
		k, err := c.Get(t.Context(), "p")
		if err != nil {
			t.Fatal(err)
		}
		st := c.Status()
		if len(st) != 1 || !st[0].Healthy || st[0].AccessKeyID != k.AccessKeyID || st[0].Principal != "coreweave/test" {
			t.Fatalf("Status = %+v", st)
		}
		if s := fmt.Sprintf("%+v %v %s", st, k, k); strings.Contains(s, k.SecretAccessKey) {
			t.Errorf("secret leaked: %s", s)
		}
	})
}

func BenchmarkCacheGetHit(b *testing.B) {
	c, err := NewCache([]CacheProfile{{Name: "p", Minter: &fakeMinter{lifetime: time.Hour}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	if _, err := c.Get(ctx, "p"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Get(ctx, "p"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Get(ctx, "p"); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
