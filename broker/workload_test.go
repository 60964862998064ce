package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// The workload tokens of these tests are "jwt|<iss>|<sub>|<exp unix>|<n>":
// fakeCheck parses them the way the daemon's checker reads a JWT's claims
// (refusing an expired one or a foreign issuer), and fakeUpstream mints a
// key per call, recording the token it was given. Signature checking is
// idtoken's, tested there and end to end; here the cache's behaviour is
// under test.

var errFakeRefused = errors.New("token refused locally")

func wtoken(iss, sub string, exp time.Time, n int) string {
	return fmt.Sprintf("jwt|%s|%s|%d|%d", iss, sub, exp.Unix(), n)
}

type fakeCheck struct {
	mu    sync.Mutex
	calls int
}

func (f *fakeCheck) check(_ context.Context, raw string) (Identity, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	p := strings.Split(raw, "|")
	if len(p) != 5 || p[0] != "jwt" {
		return Identity{}, fmt.Errorf("%w: malformed", errFakeRefused)
	}
	if p[1] != "https://issuer" {
		return Identity{}, fmt.Errorf("%w: issuer", errFakeRefused)
	}
	sec, _ := strconv.ParseInt(p[3], 10, 64)
	exp := time.Unix(sec, 0)
	if !time.Now().Before(exp) {
		return Identity{}, fmt.Errorf("%w: expired", errFakeRefused)
	}
	return Identity{Issuer: p[1], Subject: p[2], Namespace: "ns", Pod: "pod-" + p[4], Expires: exp}, nil
}

func (f *fakeCheck) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// fakeUpstream is fakeMinter (cache_test.go) as a workload profile's Mint.
type fakeUpstream struct{ fakeMinter }

func (u *fakeUpstream) mint(ctx context.Context, _ string, _ Identity) (*cwapi.Credentials, error) {
	return u.Mint(ctx)
}

func (u *fakeUpstream) startTimes() []time.Time { return u.callTimes() }

type workloadFixture struct {
	c     *Cache
	check *fakeCheck
	up    *fakeUpstream
	obs   *countingObserver
}

func newWorkloadCache(t *testing.T, share bool, opts ...func(*CacheOptions)) *workloadFixture {
	t.Helper()
	f := &workloadFixture{check: &fakeCheck{}, up: &fakeUpstream{fakeMinter{lifetime: time.Hour}}, obs: &countingObserver{}}
	base := func(o *CacheOptions) { o.Rand = func() float64 { return 0 }; o.Observer = f.obs }
	c, err := NewCache([]CacheProfile{{Name: "pods", Source: cwapi.SourceWorkloadOIDC,
		Workload: &WorkloadSpec{Check: f.check.check, Mint: f.up.mint, ShareIdentity: share}}}, append([]func(*CacheOptions){base}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	return f
}

func (f *workloadFixture) get(ctx context.Context, token string) (*cwapi.Credentials, error) {
	return f.getAs(ctx, Peer{}, token)
}

// getAs is get by peer.
func (f *workloadFixture) getAs(ctx context.Context, peer Peer, token string) (*cwapi.Credentials, error) {
	k, _, err := f.c.Lookup("pods").GetFor(ctx, peer, token)
	return k, err
}

func (f *workloadFixture) identities() int {
	for _, st := range f.c.Status() {
		if st.Profile == "pods" && st.Workload != nil {
			return st.Workload.Identities
		}
	}
	return -1
}

func TestWorkloadTokenModeMintsOncePerToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false)
		f.up.latency = 300 * time.Millisecond
		exp := time.Now().Add(time.Hour)
		const tokens, perToken = 100, 10
		var wg sync.WaitGroup
		keys := make([][]string, tokens)
		errs := make(chan error, tokens*perToken)
		var mu sync.Mutex
		for i := range tokens {
			tok := wtoken("https://issuer", "system:serviceaccount:ns:sa", exp, i) // one subject, distinct tokens
			pod := Peer{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})}         // each its pod's
			for range perToken {
				wg.Go(func() {
					k, err := f.getAs(t.Context(), pod, tok)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					keys[i] = append(keys[i], k.AccessKeyID)
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := f.up.count(); got != tokens {
			t.Errorf("upstream mints = %d for %d tokens × %d requests, want %d", got, tokens, perToken, tokens)
		}
		seen := map[string]int{}
		for i, ks := range keys {
			for _, k := range ks {
				if k != ks[0] {
					t.Fatalf("token %d got keys %v: want one key per token", i, ks)
				}
			}
			seen[ks[0]]++
		}
		if len(seen) != tokens {
			t.Errorf("%d distinct keys, want %d (one per token, never shared between tokens)", len(seen), tokens)
		}
		if n := f.identities(); n != tokens {
			t.Errorf("Status identities = %d, want %d", n, tokens)
		}
		if got := f.check.count(); got > tokens*perToken {
			t.Errorf("Check called %d times", got)
		}
	})
}

func TestWorkloadIdentityModeSharesPerSubject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, true)
		f.up.latency = 200 * time.Millisecond
		exp := time.Now().Add(time.Hour)
		var wg sync.WaitGroup
		var mu sync.Mutex
		keyOf := map[string]map[string]bool{} // subject -> keys
		for i := range 100 {
			sub := fmt.Sprintf("system:serviceaccount:ns:sa-%d", i%10)
			tok := wtoken("https://issuer", sub, exp, i)
			wg.Go(func() {
				k, err := f.get(t.Context(), tok)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if keyOf[sub] == nil {
					keyOf[sub] = map[string]bool{}
				}
				keyOf[sub][k.AccessKeyID] = true
				mu.Unlock()
			})
		}
		wg.Wait()
		if got := f.up.count(); got != 10 {
			t.Errorf("upstream mints = %d for 100 tokens of 10 subjects, want 10", got)
		}
		for sub, ks := range keyOf {
			if len(ks) != 1 {
				t.Errorf("subject %s got %d keys, want 1", sub, len(ks))
			}
		}
		// A rotated token of a known subject reuses its key: no mint.
		k1, _ := f.get(t.Context(), wtoken("https://issuer", "system:serviceaccount:ns:sa-3", exp, 3))
		k2, err := f.get(t.Context(), wtoken("https://issuer", "system:serviceaccount:ns:sa-3", exp.Add(time.Hour), 1003))
		if err != nil || k2 != k1 {
			t.Errorf("rotated token got %v, %v; want the subject's key %v", k2, err, k1)
		}
		if got := f.up.count(); got != 10 {
			t.Errorf("upstream mints after rotation = %d, want still 10", got)
		}
	})
}

// Three hours with one-hour tokens that the kubelet replaces at 80% of
// their life, and one-hour keys: in identity mode no request after the
// first one waits; in token mode only the first request of each new token
// does (that token has never been seen: its key must be bought).
func TestWorkloadNoWaitAfterFirstRequest(t *testing.T) {
	for _, share := range []bool{true, false} {
		t.Run(fmt.Sprintf("share_identity=%v", share), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newWorkloadCache(t, share)
				f.up.latency = 500 * time.Millisecond
				stop := startRun(f.c)
				defer stop()
				start := time.Now()
				issued := start
				tok := wtoken("https://issuer", "sa", issued.Add(time.Hour), 0)
				waits, firsts := 0, 0
				seen := map[string]bool{}
				for n := 1; time.Since(start) < 3*time.Hour; n++ {
					if time.Since(issued) >= 48*time.Minute {
						issued = time.Now()
						tok = wtoken("https://issuer", "sa", issued.Add(time.Hour), n)
					}
					t0 := time.Now()
					if _, err := f.get(t.Context(), tok); err != nil {
						t.Fatalf("at %s: %v", time.Since(start), err)
					}
					first := !seen[tok]
					seen[tok] = true
					if time.Since(t0) > 0 {
						if !first || (share && firsts > 0) {
							t.Errorf("request at %s waited %s (first use of its token: %v)", t0.Sub(start), time.Since(t0), first)
						}
						waits++
					}
					if first {
						firsts++
					}
					time.Sleep(10 * time.Second) // a client's request every 10 s of fake time
				}
				wantWaits := 1
				if !share {
					wantWaits = firsts
				}
				if waits != wantWaits {
					t.Errorf("%d requests waited, want %d (%d tokens used)", waits, wantWaits, firsts)
				}
			})
		})
	}
}

func TestWorkloadDroppedAtTokenExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false)
		f.up.lifetime = 2 * time.Hour // the key outlives the token upstream
		stop := startRun(f.c)
		defer stop()
		tok := wtoken("https://issuer", "sa", time.Now().Add(10*time.Minute), 0)
		if _, err := f.get(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10*time.Minute - time.Second)
		synctest.Wait()
		if n := f.identities(); n != 1 {
			t.Fatalf("identities before expiry = %d, want 1", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := f.identities(); n != 0 {
			t.Errorf("identities at the token's expiry = %d, want 0", n)
		}
		if got := f.obs.get("pods")["identity_expired"]; got != 1 {
			t.Errorf("expired evictions = %d, want 1", got)
		}
		// Its holder is refused, by the check, and nothing is minted.
		if _, err := f.get(t.Context(), tok); !errors.Is(err, errFakeRefused) {
			t.Errorf("expired token: err = %v, want the check's refusal", err)
		}
		if got := f.up.count(); got != 1 {
			t.Errorf("mints = %d, want 1 (no refresh for a token about to expire, no mint after)", got)
		}
	})
}

func TestWorkloadLRUBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false, func(o *CacheOptions) { o.MaxWorkloadIdentities = 3 })
		exp := time.Now().Add(time.Hour)
		toks := make([]string, 4)
		for i := range toks {
			toks[i] = wtoken("https://issuer", "sa", exp, i)
		}
		for _, tok := range toks[:3] {
			if _, err := f.get(t.Context(), tok); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		}
		if _, err := f.get(t.Context(), toks[0]); err != nil { // token 0 is now the most recent
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if _, err := f.get(t.Context(), toks[3]); err != nil {
			t.Fatal(err)
		}
		if n := f.identities(); n != 3 {
			t.Errorf("identities = %d, want the bound 3", n)
		}
		if got := f.obs.get("pods")["identity_lru"]; got != 1 {
			t.Errorf("lru evictions = %d, want 1", got)
		}
		// Token 1 was least recently used: it was dropped and mints again;
		// token 0 was kept and does not.
		mints := f.up.count()
		if _, err := f.get(t.Context(), toks[0]); err != nil || f.up.count() != mints {
			t.Errorf("kept token 0: err %v, mints %d -> %d", err, mints, f.up.count())
		}
		if _, err := f.get(t.Context(), toks[1]); err != nil || f.up.count() != mints+1 {
			t.Errorf("dropped token 1: err %v, mints %d -> %d, want one more", err, mints, f.up.count())
		}
	})
}

// TestWorkloadForgedTokensKeepCachedKeys: in token mode the daemon checks a
// token's claims, not its signature, so a local user can present any
// number of well-formed forged tokens, each a new identity that upstream
// refuses. Those used to evict, by LRU, every identity holding a key (a
// live flood of 400 forged tokens as another uid dropped a real
// workload's key, whose next request then waited 1.3 s for a mint behind
// the forged ones). Now a full table drops identities with no key first:
// the forged ones displace each other and the cached key stays.
func TestWorkloadForgedTokensKeepCachedKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const max = 8
		f := newFloodCache(t, max)
		exp := time.Now().Add(time.Hour)
		legit := wtoken("https://issuer", "legit", exp, 0)
		if _, err := f.get(t.Context(), legit); err != nil {
			t.Fatal(err)
		}
		for i := range 10 * max {
			time.Sleep(time.Millisecond) // every forged identity is used after the legit one
			_, err := f.get(t.Context(), wtoken("https://issuer", fmt.Sprintf("forged-%d", i), exp, i))
			if err == nil {
				t.Fatalf("forged token %d was served", i)
			}
		}
		if n := f.identities(); n != max {
			t.Errorf("identities = %d, want the bound %d", n, max)
		}
		if _, err := f.get(t.Context(), legit); err != nil {
			t.Fatalf("legit token after the flood: %v", err)
		}
		if good := len(f.up.startTimes()); good != 1 {
			t.Errorf("legit identity minted %d times, want 1: the flood dropped its cached key", good)
		}
	})
}

// newFloodCache is a token-mode cache of at most max identities whose
// upstream refuses (403) the tokens of subjects starting "forged".
func newFloodCache(t *testing.T, max int) *workloadFixture {
	t.Helper()
	f := &workloadFixture{check: &fakeCheck{}, up: &fakeUpstream{fakeMinter{lifetime: time.Hour}}, obs: &countingObserver{}}
	mint := func(ctx context.Context, token string, id Identity) (*cwapi.Credentials, error) {
		if strings.HasPrefix(id.Subject, "forged") {
			return nil, &cwapi.APIError{StatusCode: http.StatusForbidden}
		}
		return f.up.mint(ctx, token, id)
	}
	c, err := NewCache([]CacheProfile{{Name: "pods", Source: cwapi.SourceWorkloadOIDC,
		Workload: &WorkloadSpec{Check: f.check.check, Mint: mint}}},
		func(o *CacheOptions) {
			o.Rand = func() float64 { return 0 }
			o.Observer = f.obs
			o.MaxWorkloadIdentities = max
		})
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	return f
}

// cached reports whether the table holds token (its identity was not
// dropped).
func (f *workloadFixture) cached(token string) bool {
	f.c.idents.mu.RLock()
	defer f.c.idents.mu.RUnlock()
	_, ok := f.c.idents.tokens[tokenHash(token)]
	return ok
}

// TestWorkloadEvictsLeastRecentlyUsedKeyless: a full table drops the
// least recently used identity with no key (by last use, not creation),
// and an identity that got its key after joining the table is kept over
// every keyless one, though it is the least recently used of all.
func TestWorkloadEvictsLeastRecentlyUsedKeyless(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFloodCache(t, 4)
		exp := time.Now().Add(time.Hour)
		tok := func(sub string) string { return wtoken("https://issuer", sub, exp, 0) }
		use := func(sub string) {
			t.Helper()
			_, err := f.get(t.Context(), tok(sub))
			if forged := strings.HasPrefix(sub, "forged"); forged != (err != nil) {
				t.Fatalf("%s: err = %v", sub, err)
			}
			time.Sleep(time.Second)
		}
		use("legit")    // keyed, least recently used of all from here on
		use("forged-a") // a is then used again, after b and c
		use("forged-b")
		use("forged-c")
		use("forged-a")
		// Keyless by last use: b, c, a.
		for _, step := range []struct{ add, dropped string }{
			{"forged-d", "forged-b"},
			{"forged-e", "forged-c"},
			{"forged-f", "forged-a"},
			{"forged-g", "forged-d"},
		} {
			use(step.add)
			if f.cached(tok(step.dropped)) {
				t.Errorf("after %s: %s still cached, want it dropped (least recently used without a key)", step.add, step.dropped)
			}
			if !f.cached(tok("legit")) {
				t.Fatalf("after %s: the identity holding a key was dropped", step.add)
			}
			if n := f.identities(); n != 4 {
				t.Errorf("after %s: identities = %d, want 4", step.add, n)
			}
		}
		for _, sub := range []string{"forged-e", "forged-f", "forged-g"} {
			if !f.cached(tok(sub)) {
				t.Errorf("%s dropped, want kept: more recently used than the ones dropped", sub)
			}
		}
		mints := f.up.count()
		if _, err := f.get(t.Context(), tok("legit")); err != nil || f.up.count() != mints {
			t.Errorf("legit after the flood: err %v, mints %d -> %d, want its cached key", err, mints, f.up.count())
		}
		if got := f.obs.get("pods")["identity_lru"]; got != 4 {
			t.Errorf("lru evictions = %d, want 4", got)
		}
	})
}

// TestWorkloadEvictsExpiredKeyFirst: in a table of identities that all
// held a key, the one whose key expired (no refresh: Run is not running)
// goes before the least recently used one that still holds its key.
func TestWorkloadEvictsExpiredKeyFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFloodCache(t, 3)
		exp := time.Now().Add(3 * time.Hour)
		tok := func(sub string) string { return wtoken("https://issuer", sub, exp, 0) }
		for _, sub := range []string{"a", "b", "short"} {
			f.up.mu.Lock()
			f.up.lifetime = map[bool]time.Duration{true: 5 * time.Minute, false: time.Hour}[sub == "short"]
			f.up.mu.Unlock()
			if _, err := f.get(t.Context(), tok(sub)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		}
		time.Sleep(10 * time.Minute) // "short"'s key has expired; a is the least recently used
		if _, err := f.get(t.Context(), tok("new")); err != nil {
			t.Fatal(err)
		}
		if f.cached(tok("short")) || !f.cached(tok("a")) || !f.cached(tok("b")) {
			t.Errorf("cached a %v, b %v, short %v: want short (no key to serve) dropped, a and b kept",
				f.cached(tok("a")), f.cached(tok("b")), f.cached(tok("short")))
		}
		// Then, every identity holding a key: the least recently used, a.
		if _, err := f.get(t.Context(), tok("newer")); err != nil {
			t.Fatal(err)
		}
		if f.cached(tok("a")) || !f.cached(tok("b")) {
			t.Errorf("cached a %v, b %v: want a (least recently used) dropped", f.cached(tok("a")), f.cached(tok("b")))
		}
	})
}

// TestWorkloadHitAllocs: a hit of a known token allocates nothing.
func TestWorkloadHitAllocs(t *testing.T) {
	f := newWorkloadCache(t, false)
	tok := wtoken("https://issuer", "sa", time.Now().Add(time.Hour), 0)
	if _, err := f.get(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	pe := f.c.Lookup("pods")
	if a := testing.AllocsPerRun(100, func() { _, _, _ = pe.GetFor(t.Context(), Peer{}, tok) }); a != 0 {
		t.Errorf("a workload hit allocates %v times, want 0", a)
	}
}

func TestWorkloadLocalRefusalsCallNothingUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false)
		for _, tok := range []string{
			"", "not-a-jwt",
			wtoken("https://other-issuer", "sa", time.Now().Add(time.Hour), 0),
			wtoken("https://issuer", "sa", time.Now().Add(-time.Second), 0),
		} {
			if _, err := f.get(t.Context(), tok); !errors.Is(err, errFakeRefused) {
				t.Errorf("token %q: err = %v, want the check's refusal", tok, err)
			}
		}
		if got := f.up.count(); got != 0 {
			t.Errorf("upstream mints = %d, want 0", got)
		}
		if got := f.obs.get("pods")["token_refused"]; got != 4 {
			t.Errorf("TokenRefused observed %d times, want 4", got)
		}
		if n := f.identities(); n != 0 {
			t.Errorf("identities = %d, want 0", n)
		}
	})
}

// A token upstream rejects is remembered: its holder retrying costs at
// most one upstream call per backoff step.
func TestWorkloadRejectedTokenBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false)
		stop := startRun(f.c)
		defer stop()
		f.up.setErr(&cwapi.APIError{Endpoint: cwapi.PathOIDCCreds, StatusCode: http.StatusBadRequest, Code: 3, Message: "Invalid token"})
		tok := wtoken("https://issuer", "sa", time.Now().Add(time.Hour), 0)
		start := time.Now()
		for time.Since(start) < 10*time.Minute {
			if _, err := f.get(t.Context(), tok); err == nil {
				t.Fatal("a rejected token was served")
			}
			time.Sleep(time.Second) // a workload retrying every second
		}
		// RejectedBackoffInitial is 1m with equal jitter (Rand 0: half),
		// doubling: calls at 0, 30s, 1m30s, 3m30s, 7m30s.
		if got := f.up.count(); got != 5 {
			t.Errorf("upstream calls in 10 minutes of retries = %d, want 5 (one per backoff step): %v", got, f.up.startTimes())
		}
	})
}

func TestWorkloadUpstreamBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false, func(o *CacheOptions) { o.UpstreamQPS = 2 })
		exp := time.Now().Add(time.Hour)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				if _, err := f.get(t.Context(), wtoken("https://issuer", "sa", exp, i)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		starts := f.up.startTimes()
		if len(starts) != 10 {
			t.Fatalf("mints = %d, want 10", len(starts))
		}
		// A burst of 2, then 2 a second: the last starts 4 s in.
		if last := starts[len(starts)-1].Sub(start); last != 4*time.Second {
			t.Errorf("last mint started %s in, want 4s at 2 mints/s with a burst of 2", last)
		}
	})
}

// A 429 pauses background mints for its Retry-After; a client's mint
// still goes ahead.
func TestWorkload429PausesBackgroundMints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, true, func(o *CacheOptions) { o.UpstreamQPS = 100 })
		f.up.lifetime = 30 * time.Minute // refresh at 20 min
		stop := startRun(f.c)
		defer stop()
		exp := time.Now().Add(3 * time.Hour)
		if _, err := f.get(t.Context(), wtoken("https://issuer", "a", exp, 0)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		if _, err := f.get(t.Context(), wtoken("https://issuer", "b", exp, 1)); err != nil {
			t.Fatal(err)
		}
		// a's refresh at 20 min meets a 429 asking for 10 minutes.
		f.up.setErr(&cwapi.APIError{Endpoint: cwapi.PathOIDCCreds, StatusCode: http.StatusTooManyRequests, RetryAfter: 10 * time.Minute})
		time.Sleep(20*time.Minute - time.Minute + time.Second)
		synctest.Wait()
		if got := f.up.count(); got != 3 {
			t.Fatalf("mints = %d, want 3 (two first mints, a's refused refresh)", got)
		}
		f.up.setErr(nil)
		// b's refresh falls due at 21 min, inside the pause: it waits.
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if got := f.up.count(); got != 3 {
			t.Errorf("mints during the 429 pause = %d, want still 3", got)
		}
		// A client with a new identity is not paused.
		if _, err := f.get(t.Context(), wtoken("https://issuer", "c", exp, 2)); err != nil {
			t.Fatal(err)
		}
		if got := f.up.count(); got != 4 {
			t.Errorf("mints after a client's request = %d, want 4", got)
		}
		time.Sleep(6 * time.Minute) // past the pause
		synctest.Wait()
		if got := f.up.count(); got < 6 {
			t.Errorf("mints after the pause = %d, want a's and b's refreshes (>= 6)", got)
		}
	})
}

func TestWorkloadProfileRemovedDropsIdentities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false)
		stop := startRun(f.c)
		defer stop()
		if _, err := f.get(t.Context(), wtoken("https://issuer", "sa", time.Now().Add(time.Hour), 0)); err != nil {
			t.Fatal(err)
		}
		if _, err := f.c.Update([]CacheProfile{{Name: "other", Source: cwapi.SourceAccessKey, Minter: &fakeMinter{lifetime: time.Hour}}}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := f.obs.get("pods")["identity_removed"]; got != 1 {
			t.Errorf("removed evictions = %d, want 1", got)
		}
		if n := f.c.idents.count(nil); n != 0 {
			t.Errorf("table still holds %d identities of no profile", n)
		}
		f.c.idents.mu.RLock()
		left := len(f.c.idents.byKey) + len(f.c.idents.tokens) + len(f.c.idents.unkeyed)
		f.c.idents.mu.RUnlock()
		if left != 0 {
			t.Errorf("table holds %d entries after its profile was removed", left)
		}
	})
}

func TestWorkloadProfileRefusesGet(t *testing.T) {
	f := newWorkloadCache(t, false)
	if _, err := f.c.Get(t.Context(), "pods"); !errors.Is(err, ErrTokenRequired) {
		t.Errorf("Get on a workload profile: %v, want ErrTokenRequired", err)
	}
	if _, err := f.c.Lookup("pods").Get(t.Context()); !errors.Is(err, ErrTokenRequired) {
		t.Errorf("Entry.Get on a workload profile: %v, want ErrTokenRequired", err)
	}
	st := f.c.Status()
	if len(st) != 1 || !st[0].Healthy || st[0].Workload == nil {
		t.Errorf("Status = %+v, want one healthy workload profile", st)
	}
}

func TestWorkloadStatusCountsMintsLastHour(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false)
		for i := range 3 {
			if _, err := f.get(t.Context(), wtoken("https://issuer", "sa", time.Now().Add(3*time.Hour), i)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(25 * time.Minute)
		}
		// Mints at 0, 25 and 50 minutes; now is 75 minutes.
		if got := f.c.Status()[0].Workload.MintsLastHour; got != 2 {
			t.Errorf("MintsLastHour = %d, want 2", got)
		}
	})
}

// A Check that allows for clock skew may accept a token that expired
// seconds ago: the cache still refuses it, with no upstream call.
func TestWorkloadNeverServesAnExpiredToken(t *testing.T) {
	up := &fakeUpstream{fakeMinter{lifetime: time.Hour}}
	obs := &countingObserver{}
	c, err := NewCache([]CacheProfile{{Name: "pods", Source: cwapi.SourceWorkloadOIDC, Workload: &WorkloadSpec{
		Check: func(context.Context, string) (Identity, error) {
			return Identity{Issuer: "https://issuer", Subject: "sa", Expires: time.Now().Add(-10 * time.Second)}, nil
		},
		Mint: up.mint}}}, func(o *CacheOptions) { o.Observer = obs })
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Lookup("pods").GetFor(t.Context(), Peer{}, "jwt"); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("err = %v, want ErrTokenExpired", err)
	}
	if up.count() != 0 || obs.get("pods")["token_refused"] != 1 {
		t.Errorf("mints %d, refusals observed %d; want 0 and 1", up.count(), obs.get("pods")["token_refused"])
	}
}
