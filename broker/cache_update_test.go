package broker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// refreshLoops counts the goroutines running a refresh loop, in and out of
// synctest bubbles.
func refreshLoops() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), ").refreshLoop(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func profile(name, fingerprint string, m cwapi.Minter) CacheProfile {
	return CacheProfile{Name: name, Source: cwapi.SourceAccessKey, Minter: m, Fingerprint: fingerprint}
}

func newUpdateCache(t *testing.T, profiles ...CacheProfile) *Cache {
	t.Helper()
	c, err := NewCache(profiles, func(o *CacheOptions) { o.Rand = func() float64 { return 0 } })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustUpdate(t *testing.T, c *Cache, want UpdateResult, profiles ...CacheProfile) {
	t.Helper()
	got, err := c.Update(profiles)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	eq := func(a, b []string) bool { return slices.Equal(a, b) || len(a) == 0 && len(b) == 0 }
	if !eq(got.Kept, want.Kept) || !eq(got.Added, want.Added) || !eq(got.Replaced, want.Replaced) || !eq(got.Removed, want.Removed) {
		t.Fatalf("Update = %+v, want %+v", got, want)
	}
}

func statusNames(c *Cache) []string {
	var out []string
	for _, st := range c.Status() {
		out = append(out, st.Profile)
	}
	return out
}

// TestUpdateKeepsUnchangedProfile: same name and fingerprint keep the
// entry: the same key pointer, no mint, and the old minter keeps refreshing.
func TestUpdateKeepsUnchangedProfile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ma, mb := &fakeMinter{lifetime: time.Hour}, &fakeMinter{lifetime: time.Hour}
		c := newUpdateCache(t, profile("a", "fa", ma), profile("b", "fb", mb))
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		ka, kb := mustGet(t, c, "a"), mustGet(t, c, "b")
		unused := &fakeMinter{prefix: "NEW", lifetime: time.Hour}
		mustUpdate(t, c, UpdateResult{Kept: []string{"a", "b"}},
			profile("b", "fb", unused), profile("a", "fa", unused))
		synctest.Wait()
		if got := mustGet(t, c, "a"); got != ka {
			t.Errorf("kept a: Get = %v, want the same key %v", got, ka)
		}
		if got := mustGet(t, c, "b"); got != kb {
			t.Errorf("kept b: Get = %v, want the same key %v", got, kb)
		}
		if ma.count() != 1 || mb.count() != 1 || unused.count() != 0 {
			t.Errorf("mints a=%d b=%d new=%d, want 1, 1, 0", ma.count(), mb.count(), unused.count())
		}
		if n := refreshLoops(); n != 2 {
			t.Errorf("refresh loops = %d, want 2", n)
		}
		time.Sleep(40 * time.Minute) // the kept loops refresh with the kept minters
		synctest.Wait()
		if ma.count() != 2 || mb.count() != 2 || unused.count() != 0 {
			t.Errorf("after a refresh: mints a=%d b=%d new=%d, want 2, 2, 0", ma.count(), mb.count(), unused.count())
		}
	})
}

func TestUpdateAddsProfileWhileRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ma, mb := &fakeMinter{lifetime: time.Hour}, &fakeMinter{prefix: "B", lifetime: time.Hour}
		c := newUpdateCache(t, profile("a", "fa", ma))
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		if _, err := c.Get(t.Context(), "b"); !errors.Is(err, ErrUnknownProfile) {
			t.Fatalf("before Update: Get(b) err = %v, want ErrUnknownProfile", err)
		}
		mustUpdate(t, c, UpdateResult{Kept: []string{"a"}, Added: []string{"b"}},
			profile("a", "fa", ma), profile("b", "fb", mb))
		synctest.Wait()
		if mb.count() != 1 {
			t.Fatalf("added b: mints = %d, want 1 (warmed by Run)", mb.count())
		}
		if k := mustGet(t, c, "b"); !strings.HasPrefix(k.AccessKeyID, "B") || mb.count() != 1 {
			t.Errorf("Get(b) = %v after %d mints, want the warm key", k, mb.count())
		}
		if got := statusNames(c); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("Status profiles = %v", got)
		}
		time.Sleep(40 * time.Minute)
		synctest.Wait()
		if mb.count() != 2 {
			t.Errorf("added b: mints after 40m = %d, want 2 (its loop refreshes)", mb.count())
		}
	})
}

func TestUpdateRemovesProfile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ma, mb, mc := &fakeMinter{lifetime: time.Hour}, &fakeMinter{lifetime: time.Hour}, &fakeMinter{lifetime: time.Hour}
		c := newUpdateCache(t, profile("a", "", ma), profile("b", "", mb), profile("c", "", mc))
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		if n := refreshLoops(); n != 3 {
			t.Fatalf("refresh loops = %d, want 3", n)
		}
		mustUpdate(t, c, UpdateResult{Kept: []string{"a"}, Removed: []string{"b", "c"}}, profile("a", "", ma))
		for _, name := range []string{"b", "c"} {
			if _, err := c.Get(t.Context(), name); !errors.Is(err, ErrUnknownProfile) {
				t.Errorf("removed %s: Get err = %v, want ErrUnknownProfile", name, err)
			}
		}
		if got := statusNames(c); !slices.Equal(got, []string{"a"}) {
			t.Errorf("Status profiles = %v, want [a]", got)
		}
		synctest.Wait()
		if n := refreshLoops(); n != 1 {
			t.Errorf("refresh loops after removing two = %d, want 1", n)
		}
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if mb.count() != 1 || mc.count() != 1 {
			t.Errorf("removed profiles minted again: b=%d c=%d", mb.count(), mc.count())
		}
	})
}

// TestUpdateReplacesProfile: a changed fingerprint drops the old key at
// once and mints with the new minter; the old key is never served again.
func TestUpdateReplacesProfile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		old, repl := &fakeMinter{prefix: "OLD", lifetime: time.Hour}, &fakeMinter{prefix: "NEW", lifetime: time.Hour, latency: time.Second}
		c, err := NewCache([]CacheProfile{profile("a", "org=1", old)},
			func(o *CacheOptions) { o.Rand = func() float64 { return 0 }; o.KeyWarmup = time.Minute })
		if err != nil {
			t.Fatal(err)
		}
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		mustGet(t, c, "a")
		mustUpdate(t, c, UpdateResult{Replaced: []string{"a"}}, profile("a", "org=2", repl))
		// The new entry is cold: no warm-up, and the old key is gone even
		// while the new mint is in flight.
		if st := c.Status()[0]; st.Healthy || st.AccessKeyID != "" {
			t.Errorf("Status right after the replacement = %+v, want cold", st)
		}
		for range 2 * 60 * 60 {
			k, err := c.Get(t.Context(), "a")
			if err != nil || !strings.HasPrefix(k.AccessKeyID, "NEW") {
				t.Fatalf("after the replacement Get = %v, %v; want a key of the new minter", k, err)
			}
			time.Sleep(time.Second)
		}
		if old.count() != 1 {
			t.Errorf("old minter called %d times, want only the first mint", old.count())
		}
		if n := refreshLoops(); n != 1 {
			t.Errorf("refresh loops = %d, want 1", n)
		}
	})
}

// TestUpdateInflightMintOfReplacedEntryIsNotShared: a client of the new
// entry does not join the old entry's flight, the old flight is cancelled,
// and it writes nothing into the new entry.
func TestUpdateInflightMintOfReplacedEntryIsNotShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		old := &fakeMinter{prefix: "OLD", lifetime: time.Hour, latency: 10 * time.Second}
		repl := &fakeMinter{prefix: "NEW", lifetime: time.Hour, latency: time.Second}
		c := newUpdateCache(t, profile("a", "1", old))
		var oldErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, oldErr = c.Get(t.Context(), "a") })
		synctest.Wait() // the old entry's mint is in flight
		mustUpdate(t, c, UpdateResult{Replaced: []string{"a"}}, profile("a", "2", repl))
		start := time.Now()
		k := mustGet(t, c, "a")
		if !strings.HasPrefix(k.AccessKeyID, "NEW") || time.Since(start) != time.Second {
			t.Errorf("Get after the replacement = %v after %s, want the new minter's key after its 1s", k, time.Since(start))
		}
		wg.Wait()
		if !errors.Is(oldErr, ErrNoValidKey) || !errors.Is(oldErr, errRemoved) {
			t.Errorf("the old flight's caller: err = %v, want ErrNoValidKey because the profile was replaced", oldErr)
		}
		if got := mustGet(t, c, "a"); got != k {
			t.Errorf("the old flight overwrote the new entry: Get = %v, want %v", got, k)
		}
		if st := c.Status()[0]; st.LastError != "" || st.AccessKeyID != k.AccessKeyID {
			t.Errorf("Status = %+v, want the new entry untouched by the old flight", st)
		}
	})
}

func TestUpdateInvalidChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		c := newUpdateCache(t, profile("a", "1", m))
		k := mustGet(t, c, "a")
		for name, ps := range map[string][]CacheProfile{
			"duplicate":  {profile("a", "2", m), profile("b", "", m), profile("b", "", m)},
			"no minter":  {profile("a", "2", m), profile("b", "", nil)},
			"empty name": {profile("", "", m)},
		} {
			res, err := c.Update(ps)
			if err == nil {
				t.Errorf("%s: Update = %+v, nil; want an error", name, res)
			}
		}
		if got := mustGet(t, c, "a"); got != k {
			t.Errorf("after invalid updates Get(a) = %v, want the same key", got)
		}
		if _, err := c.Get(t.Context(), "b"); !errors.Is(err, ErrUnknownProfile) {
			t.Errorf("Get(b) err = %v, want ErrUnknownProfile", err)
		}
		if m.count() != 1 {
			t.Errorf("mints = %d, want 1", m.count())
		}
	})
}

func TestUpdateBeforeRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ma, mb := &fakeMinter{lifetime: time.Hour}, &fakeMinter{lifetime: time.Hour}
		c := newUpdateCache(t, profile("a", "", ma), profile("gone", "", ma))
		mustUpdate(t, c, UpdateResult{Kept: []string{"a"}, Added: []string{"b"}, Removed: []string{"gone"}},
			profile("a", "", ma), profile("b", "", mb))
		stop := startRun(c)
		synctest.Wait()
		if ma.count() != 1 || mb.count() != 1 || refreshLoops() != 2 {
			t.Errorf("Run after Update: mints a=%d b=%d, loops %d; want 1, 1, 2", ma.count(), mb.count(), refreshLoops())
		}
		stop()
		if _, err := c.Update(nil); !errors.Is(err, ErrCacheStopped) {
			t.Errorf("Update after Run returned: err = %v, want ErrCacheStopped", err)
		}
		if got := statusNames(c); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("a refused Update changed the set: %v", got)
		}
	})
}

// TestRunJoinsLoopsStartedByUpdate: Run returns only once every refresh
// loop has exited, including those Update started. Their mints ignore
// cancellation for a second, so a Run that did not wait would return first.
func TestRunJoinsLoopsStartedByUpdate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stubborn := cwapi.MinterFunc(func(ctx context.Context) (*cwapi.Credentials, error) {
			time.Sleep(time.Second)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return &cwapi.Credentials{AccessKeyID: "CWKEY", SecretAccessKey: "s", Expires: time.Now().Add(time.Hour)}, nil
		})
		c := newUpdateCache(t, profile("a", "", &fakeMinter{lifetime: time.Hour}))
		stop := startRun(c)
		synctest.Wait()
		var ps []CacheProfile
		for i := range 5 {
			ps = append(ps, profile(fmt.Sprintf("p%d", i), "", stubborn))
		}
		mustUpdate(t, c, UpdateResult{Added: []string{"p0", "p1", "p2", "p3", "p4"}, Removed: []string{"a"}}, ps...)
		mustUpdate(t, c, UpdateResult{Kept: []string{"p0", "p1", "p2", "p3", "p4"}, Added: []string{"q"}},
			append(ps, profile("q", "", stubborn))...)
		synctest.Wait()
		if n := refreshLoops(); n != 6 {
			t.Fatalf("refresh loops = %d, want 6", n)
		}
		start := time.Now()
		stop()
		if n := refreshLoops(); n != 0 || time.Since(start) != time.Second {
			t.Errorf("after Run returned: %d refresh loops, took %s; want 0, after the mints' 1s", n, time.Since(start))
		}
	})
}

// TestUpdateConcurrentWithGet runs Gets on a stable and a toggled profile
// while Update adds, replaces and removes the toggled one (run with -race).
func TestUpdateConcurrentWithGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stable := &fakeMinter{prefix: "S", lifetime: time.Hour}
		toggled := []*fakeMinter{{prefix: "T0", lifetime: time.Hour}, {prefix: "T1", lifetime: time.Hour}}
		c := newUpdateCache(t, profile("s", "", stable))
		stop := startRun(c)
		defer stop()
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					if k, err := c.Get(ctx, "s"); err != nil || !strings.HasPrefix(k.AccessKeyID, "S") {
						t.Errorf("Get(s) = %v, %v", k, err)
						return
					}
					k, err := c.Get(ctx, "t")
					if err == nil && !strings.HasPrefix(k.AccessKeyID, "T") {
						t.Errorf("Get(t) = %v", k)
						return
					}
					if err != nil && !errors.Is(err, ErrUnknownProfile) && !errors.Is(err, ErrNoValidKey) && ctx.Err() == nil {
						t.Errorf("Get(t) err = %v", err)
						return
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
		for i := range 200 {
			ps := []CacheProfile{profile("s", "", stable)}
			if i%3 != 2 {
				ps = append(ps, profile("t", fmt.Sprint(i%2), toggled[i%2]))
			}
			if _, err := c.Update(ps); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Millisecond)
		}
		cancel()
		wg.Wait()
		if stable.count() != 1 {
			t.Errorf("stable profile minted %d times, want 1", stable.count())
		}
	})
}

// TestUpdateAfterRunContextEndsIsRefused: once Run's context has ended,
// Update refuses, even when Run has not yet noticed; it never reports
// success on a cache that no longer refreshes.
func TestUpdateAfterRunContextEndsIsRefused(t *testing.T) {
	for i := range 50 {
		synctest.Test(t, func(t *testing.T) {
			m := &fakeMinter{lifetime: time.Hour}
			c := newUpdateCache(t, profile("a", "", m))
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { c.Run(ctx); close(done) }()
			synctest.Wait()
			cancel()
			_, err := c.Update([]CacheProfile{profile("a", "", m), profile("b", "", m)})
			<-done
			if !errors.Is(err, ErrCacheStopped) {
				t.Fatalf("trial %d: Update after Run's context ended: err = %v, want ErrCacheStopped", i, err)
			}
			if got := statusNames(c); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("trial %d: a refused Update changed the set: %v", i, got)
			}
		})
	}
}

// TestEntryPinsItsConfiguration: an Entry taken before a reload keeps
// serving the profile as configured then (never the replacement's key),
// never mints once dropped, and equals the new Entry only when kept.
func TestEntryPinsItsConfiguration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ma, mb := &fakeMinter{prefix: "A", lifetime: time.Hour}, &fakeMinter{prefix: "B", lifetime: time.Hour}
		c := newUpdateCache(t, profile("kept", "", ma), profile("p", "old", ma))
		kept, old := c.Lookup("kept"), c.Lookup("p")
		if c.Lookup("nope") != (Entry{}) {
			t.Error("Lookup of an unknown profile is not the zero Entry")
		}
		if _, err := (Entry{}).Get(t.Context()); !errors.Is(err, ErrUnknownProfile) {
			t.Errorf("zero Entry Get: %v, want ErrUnknownProfile", err)
		}
		oldKey, err := old.Get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		mustUpdate(t, c, UpdateResult{Kept: []string{"kept"}, Replaced: []string{"p"}}, profile("kept", "", ma), profile("p", "new", mb))
		if c.Lookup("kept") != kept || c.Lookup("p") == old {
			t.Error("Lookup after Update: want the kept Entry equal and the replaced one new")
		}
		if k, err := old.Get(t.Context()); err != nil || k != oldKey {
			t.Errorf("the replaced Entry Get = %v, %v; want its own key %v", k, err, oldKey)
		}
		if k, err := c.Lookup("p").Get(t.Context()); err != nil || !strings.HasPrefix(k.AccessKeyID, "B") {
			t.Errorf("the new Entry Get = %v, %v; want a key of the new minter", k, err)
		}
		if a := testing.AllocsPerRun(100, func() { _, _ = c.Lookup("p").Get(t.Context()) }); a != 0 {
			t.Errorf("Lookup+Get hit allocates %v, want 0", a)
		}
		time.Sleep(time.Hour) // the old key expires; a dropped entry never mints
		n := ma.count()
		if _, err := old.Get(t.Context()); !errors.Is(err, ErrNoValidKey) || ma.count() != n {
			t.Errorf("dropped Entry Get after expiry: %v, mints %d -> %d; want ErrNoValidKey and no mint", err, n, ma.count())
		}
	})
}
