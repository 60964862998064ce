package broker

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// logLines collects zerolog JSON lines; safe for concurrent writers.
type logLines struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// events returns the parsed lines whose event field is event.
func (l *logLines) events(t *testing.T, event string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(l.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

func newWarmupCache(t *testing.T, warmup time.Duration, m cwapi.Minter, r cwapi.Revoker, logs *logLines) *Cache {
	t.Helper()
	c, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m, Revoker: r}},
		func(o *CacheOptions) {
			o.Rand = func() float64 { return 0 }
			o.KeyWarmup = warmup
			if logs != nil {
				o.Logger = zerolog.New(logs)
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustGet(t *testing.T, c *Cache, profile string) *cwapi.Credentials {
	t.Helper()
	k, err := c.Get(t.Context(), profile)
	if err != nil {
		t.Fatalf("Get(%q) at %s: %v", profile, time.Now().UTC().Format(time.TimeOnly), err)
	}
	return k
}

func TestWarmupColdStartServesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, latency: time.Second}
		c := newWarmupCache(t, time.Minute, m, nil, nil)
		start := time.Now()
		k := mustGet(t, c, "p")
		if took := time.Since(start); took != time.Second {
			t.Errorf("cold Get took %s, want only the mint's 1s (no warm-up)", took)
		}
		if st := c.Status()[0]; !st.Healthy || st.AccessKeyID != k.AccessKeyID || st.WarmingAccessKeyID != "" || st.WarmingUntil != nil {
			t.Errorf("Status = %+v, want the first key served with nothing warming", st)
		}
	})
}

// TestWarmupServesPreviousKeyUntilNewKeyIsWarm: after a background refresh
// the previous key is served until exactly KeyWarmup after the new key was
// obtained (the end of its mint), then the new one; Status and the
// key_minted line say so.
func TestWarmupServesPreviousKeyUntilNewKeyIsWarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const warmup = 5 * time.Second
		logs := &logLines{}
		m := &fakeMinter{lifetime: time.Hour, latency: time.Second}
		c := newWarmupCache(t, warmup, m, nil, logs)
		t0 := time.Now()
		stop := startRun(c)
		defer stop()
		time.Sleep(time.Second) // the warm-up mint
		synctest.Wait()
		first := mustGet(t, c, "p")
		// The refresh starts 40 min after the first key arrived and takes 1s.
		obtained := t0.Add(time.Second + 40*time.Minute + time.Second)
		time.Sleep(time.Until(obtained))
		synctest.Wait()
		if got := m.count(); got != 2 {
			t.Fatalf("mints = %d, want 2 (warm-up and refresh)", got)
		}
		if k := mustGet(t, c, "p"); k != first {
			t.Fatalf("right after the refresh Get = %v, want the previous key %v", k, first)
		}
		st := c.Status()[0]
		if !st.Healthy || st.AccessKeyID != first.AccessKeyID || !st.Expiration.Equal(first.Expires) ||
			st.WarmingAccessKeyID == "" || st.WarmingAccessKeyID == first.AccessKeyID ||
			st.WarmingUntil == nil || !st.WarmingUntil.Equal(obtained.Add(warmup)) {
			t.Errorf("Status while warming = %+v, want the previous key served and the new one warming until %s", st, obtained.Add(warmup))
		}
		newID := st.WarmingAccessKeyID

		time.Sleep(warmup - time.Nanosecond)
		if k := mustGet(t, c, "p"); k != first {
			t.Fatalf("1ns before the warm-up ends Get = %v, want the previous key", k)
		}
		time.Sleep(time.Nanosecond)
		second := mustGet(t, c, "p")
		if second == first || second.AccessKeyID != newID {
			t.Fatalf("when the warm-up ends Get = %v, want the new key %s", second, newID)
		}
		st = c.Status()[0]
		if st.AccessKeyID != newID || !st.Expiration.Equal(second.Expires) || st.WarmingAccessKeyID != "" || st.WarmingUntil != nil {
			t.Errorf("Status after the warm-up = %+v, want the new key served, nothing warming", st)
		}
		if got := m.count(); got != 2 {
			t.Errorf("mints = %d, want 2: warming must not change the refresh schedule", got)
		}

		minted := logs.events(t, "key_minted")
		if len(minted) != 2 {
			t.Fatalf("key_minted lines = %d, want 2", len(minted))
		}
		for i, want := range []time.Time{t0.Add(time.Second), obtained.Add(warmup)} {
			if got := minted[i]["serve_from"]; got != want.Format(zerolog.TimeFieldFormat) {
				t.Errorf("key_minted #%d serve_from = %v, want %s", i+1, got, want.Format(zerolog.TimeFieldFormat))
			}
		}
	})
}

// TestWarmupEndsWhenPreviousKeyStopsBeingServable: a previous key whose
// serve limit comes before the warm-up ends is served up to that limit,
// then the new key takes over.
func TestWarmupEndsWhenPreviousKeyStopsBeingServable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		c := newWarmupCache(t, 30*time.Minute, m, nil, nil)
		t0 := time.Now()
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		first := mustGet(t, c, "p")
		// Refresh at 40m; the first key may be served until 59m (expiry
		// minus the 1m margin), before the warm-up would end at 70m.
		time.Sleep(40 * time.Minute)
		synctest.Wait()
		if st := c.Status()[0]; st.WarmingUntil == nil || !st.WarmingUntil.Equal(t0.Add(59*time.Minute)) {
			t.Errorf("Status WarmingUntil = %v, want the previous key's serve limit %s", st.WarmingUntil, t0.Add(59*time.Minute))
		}
		time.Sleep(19*time.Minute - time.Nanosecond)
		if k := mustGet(t, c, "p"); k != first {
			t.Fatalf("just before the previous key's limit Get = %v, want it", k)
		}
		time.Sleep(time.Nanosecond)
		if k := mustGet(t, c, "p"); k == first {
			t.Fatalf("at the previous key's limit Get still serves it")
		}
	})
}

// TestWarmupSkippedWhenPreviousKeyIsNotServable: a key minted while no key
// can be served (first mint after an outage) is served at once.
func TestWarmupSkippedWhenPreviousKeyIsNotServable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		c := newWarmupCache(t, time.Minute, m, nil, nil)
		first := mustGet(t, c, "p")
		time.Sleep(59 * time.Minute) // past the first key's serve limit; no Run
		k := mustGet(t, c, "p")
		if k == first || m.count() != 2 {
			t.Fatalf("after the old key's limit Get = %v (mints %d), want a new key at once", k, m.count())
		}
		if st := c.Status()[0]; st.AccessKeyID != k.AccessKeyID || st.WarmingAccessKeyID != "" {
			t.Errorf("Status = %+v, want the new key served, nothing warming", st)
		}
	})
}

// TestWarmupNotAfterRevoke: the key Revoke mints is served at once, and
// neither the revoked key nor a key warming when Revoke ran is served again.
func TestWarmupNotAfterRevoke(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		c := newWarmupCache(t, 5*time.Second, m, &fakeRevoker{}, nil)
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		first := mustGet(t, c, "p")

		rev, err := c.Revoke(t.Context(), "p", "")
		if err != nil {
			t.Fatal(err)
		}
		second := mustGet(t, c, "p")
		if second == first || second.AccessKeyID != rev.NewAccessKeyID {
			t.Fatalf("right after Revoke Get = %v, want the new key %s at once", second, rev.NewAccessKeyID)
		}

		// Now during a warm-up: the refresh at 40m leaves `second` served
		// and a third key warming; Revoke then.
		time.Sleep(40 * time.Minute)
		synctest.Wait()
		if k := mustGet(t, c, "p"); k != second {
			t.Fatalf("during the warm-up Get = %v, want the previous key", k)
		}
		warming := c.Status()[0].WarmingAccessKeyID
		rev, err = c.Revoke(t.Context(), "p", "")
		if err != nil {
			t.Fatal(err)
		}
		if rev.RevokedAccessKeyID != second.AccessKeyID {
			t.Errorf("Revoke during the warm-up revoked %s, want the key being served, %s", rev.RevokedAccessKeyID, second.AccessKeyID)
		}
		for range 10 {
			k := mustGet(t, c, "p")
			if k.AccessKeyID != rev.NewAccessKeyID || k == second || k.AccessKeyID == warming {
				t.Fatalf("after a Revoke during the warm-up Get = %v, want the re-minted key %s", k, rev.NewAccessKeyID)
			}
			time.Sleep(time.Second)
		}
		if st := c.Status()[0]; st.WarmingAccessKeyID != "" {
			t.Errorf("Status = %+v, want nothing warming after Revoke", st)
		}
	})
}

func TestWarmupZeroServesNewKeyAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		c := newWarmupCache(t, 0, m, nil, nil)
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		first := mustGet(t, c, "p")
		time.Sleep(40 * time.Minute)
		synctest.Wait()
		if k := mustGet(t, c, "p"); k == first || m.count() != 2 {
			t.Fatalf("right after the refresh Get = %v (mints %d), want the new key", k, m.count())
		}
	})
}

// TestWarmupHitPathDoesNotAllocate: serving the previous key during a
// warm-up, and the new one after, allocates nothing.
func TestWarmupHitPathDoesNotAllocate(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var offset time.Duration
	now := func() time.Time { return base.Add(offset) }
	var n int
	m := cwapi.MinterFunc(func(context.Context) (*cwapi.Credentials, error) {
		n++
		return &cwapi.Credentials{AccessKeyID: "CWKEY" + strings.Repeat("x", n), SecretAccessKey: "s", Expires: now().Add(time.Hour)}, nil
	})
	c, err := NewCache([]CacheProfile{{Name: "p", Minter: m}},
		func(o *CacheOptions) {
			o.Now = now
			o.Rand = func() float64 { return 0 }
			o.KeyWarmup = 5 * time.Second
		})
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.Get(t.Context(), "p")
	if err != nil {
		t.Fatal(err)
	}
	offset = 40 * time.Minute
	c.mint(t.Context(), c.lookup("p"), triggerRefresh) // what the refresh loop does
	for _, tc := range []struct {
		at   time.Duration
		want func(*cwapi.Credentials) bool
	}{
		{40 * time.Minute, func(k *cwapi.Credentials) bool { return k == first }},
		{40*time.Minute + 5*time.Second, func(k *cwapi.Credentials) bool { return k != first }},
	} {
		offset = tc.at
		var k *cwapi.Credentials
		allocs := testing.AllocsPerRun(100, func() { k, _ = c.Get(t.Context(), "p") })
		if allocs != 0 || !tc.want(k) {
			t.Errorf("Get at +%s: %v allocs, key %v", tc.at, allocs, k)
		}
	}
}

// TestWarmupStatusDescribesServedKey: while a key warms up, Status's
// RefreshAt belongs to the key it names (the previous one, replaced when the
// warm-up ends), not to the warming key.
func TestWarmupStatusDescribesServedKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		c := newWarmupCache(t, 5*time.Second, m, nil, nil)
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		time.Sleep(40 * time.Minute) // the refresh: a new key warms up
		synctest.Wait()
		st := c.Status()[0]
		if st.WarmingAccessKeyID == "" {
			t.Fatalf("Status = %+v, want a key warming", st)
		}
		if st.RefreshAt == nil || st.WarmingUntil == nil || !st.RefreshAt.Equal(*st.WarmingUntil) {
			t.Errorf("Status while warming: RefreshAt %v, WarmingUntil %v; want the served key %s replaced when the warm-up ends",
				st.RefreshAt, st.WarmingUntil, st.AccessKeyID)
		}
	})
}

// TestRevokeDuringWarmupRevokesWarmingKey: Revoke during a warm-up revokes
// the warming key as well as the served one, so no key Revoke stops holding
// stays live upstream.
func TestRevokeDuringWarmupRevokesWarmingKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		r := &fakeRevoker{}
		c := newWarmupCache(t, 5*time.Second, m, r, nil)
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		time.Sleep(40 * time.Minute)
		synctest.Wait()
		st := c.Status()[0]
		served, warming := st.AccessKeyID, st.WarmingAccessKeyID
		if warming == "" {
			t.Fatalf("Status = %+v, want a key warming", st)
		}
		rev, err := c.Revoke(t.Context(), "p", "")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.revoked, []string{served, warming}) {
			t.Errorf("revoked upstream %v, want [%s %s] (the served and the warming key)", r.revoked, served, warming)
		}
		if rev.RevokedAccessKeyID != served || rev.RevokedWarmingAccessKeyID != warming {
			t.Errorf("Revoke = %+v, want %s revoked and warming key %s revoked", rev, served, warming)
		}
	})
}
