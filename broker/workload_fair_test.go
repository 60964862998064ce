package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/broker/idtoken"
)

// The forged-token flood against the shared upstream budget: in token mode
// the daemon checks a token's claims, not its signature, so one peer can
// present any number of well-formed forged tokens, each costing an
// upstream mint that CoreWeave refuses. These tests run the real client
// against the emulator (cwapitest.StartFixture), which verifies signatures
// as CoreWeave does, under testing/synctest so that the budget's waits are
// virtual time.

// emulatedWorkloadCache is a token-mode workload profile ("pods") as the
// daemon wires it (cmd/cwcreds/workload.go): claims checked locally, keys
// minted by the emulator with the caller's token. Call it inside the
// bubble, with emu from StartFixture outside it.
func emulatedWorkloadCache(t *testing.T, emu *cwapitest.Emulator, url string, opts ...func(*CacheOptions)) *Cache {
	t.Helper()
	client, err := cwapi.NewClient(url, func(o *cwapi.ClientOptions) { o.HTTPClient = handlerDoer{emu} })
	if err != nil {
		t.Fatal(err)
	}
	policy := idtoken.Policy{Issuers: []string{emu.Issuer().URL()}, Audience: cwapitest.DefaultAudience, Leeway: idtoken.DefaultLeeway}
	spec := &WorkloadSpec{
		Check: func(_ context.Context, raw string) (Identity, error) {
			c, err := idtoken.Parse(raw)
			if err != nil {
				return Identity{}, err
			}
			if err := policy.Check(c, time.Now()); err != nil {
				return Identity{}, err
			}
			return Identity{Issuer: c.Issuer, Subject: c.Subject, Namespace: c.Namespace, Pod: c.Pod, Expires: c.Expiry}, nil
		},
		Mint: func(ctx context.Context, token string, _ Identity) (*cwapi.Credentials, error) {
			return client.CreateAccessKeyFromOIDC(ctx, cwapitest.FixtureOrgID, token, time.Hour, nil)
		},
	}
	c, err := NewCache([]CacheProfile{{Name: "pods", Source: cwapi.SourceWorkloadOIDC, Workload: spec}}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The flood's peers: mallory, a local user presenting forged tokens, and
// alice, a pod whose genuine first token arrives behind them.
var (
	mallory = Peer{UID: 1001, HasUID: true}
	alice   = Peer{Addr: netip.MustParseAddr("10.4.0.17")}
)

// floodResult is what a peer's legitimate first mint met behind a flood.
type floodResult struct {
	wait          time.Duration // virtual time until it was served
	upstreamAhead int           // OIDC mint requests upstream saw before it
	forgedServed  int           // forged requests answered by an upstream refusal (403)
	forgedBounced int           // forged requests refused with ErrTooManyPendingTokens
}

// runForgedFlood: mallory presents n forged tokens at once, then alice
// presents her pod's first, genuine token. It returns what alice's mint
// met.
func runForgedFlood(t *testing.T, n int, qps float64, opts ...func(*CacheOptions)) floodResult {
	emu, url := cwapitest.StartFixture(t)
	iss := emu.Issuer()
	var res floodResult
	synctest.Test(t, func(t *testing.T) {
		c := emulatedWorkloadCache(t, emu, url, append([]func(*CacheOptions){func(o *CacheOptions) { o.UpstreamQPS = qps }}, opts...)...)
		pods := c.Lookup("pods")
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range n {
			forged := iss.Forge(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: fmt.Sprintf("forged-%d", i), Alg: cwapitest.ES256},
				cwapitest.ForgeForeignKey)
			wg.Go(func() {
				_, _, err := pods.GetFor(t.Context(), mallory, forged)
				var ue *UnavailableError
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.As(err, &ue) && ue.Workload:
					res.forgedServed++
				case errors.Is(err, ErrTooManyPendingTokens):
					res.forgedBounced++
				default:
					t.Errorf("forged token: %v, want upstream's refusal or ErrTooManyPendingTokens", err)
				}
			})
		}
		synctest.Wait() // every forged request is answered or queued for the budget
		good := iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-0"})
		start := time.Now()
		k, _, err := pods.GetFor(t.Context(), alice, good)
		if err != nil || k == nil {
			t.Fatalf("legitimate token: key %v, err %v", k, err)
		}
		res.wait = time.Since(start)
		res.upstreamAhead = emu.Stats().Requests[cwapitest.EndpointOIDC] - 1
		wg.Wait()
	})
	return res
}

// TestWorkloadForgedFloodBoundedPerPeer: one peer's flood of forged tokens
// costs at most its bound of upstream mints, so another peer's first mint
// waits behind at most that many, not behind the whole flood (without the
// bound: behind all 200, 19.1 s at 10 mints/s).
func TestWorkloadForgedFloodBoundedPerPeer(t *testing.T) {
	const n, qps = 200, 10
	for _, tc := range []struct {
		name           string
		bound          int
		wantAhead      int
		wantBounced    int
		wantWaitAtMost time.Duration
	}{
		{"default bound", 0, DefaultMaxPendingTokensPerPeer, n - DefaultMaxPendingTokensPerPeer, time.Second},
		{"no bound", -1, n, 0, time.Duration(n) * time.Second / qps},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runForgedFlood(t, n, qps, func(o *CacheOptions) { o.MaxPendingTokensPerPeer = tc.bound })
			t.Logf("%d forged tokens from one peer at %g mints/s: the other peer's first mint waited %s behind %d upstream calls; "+
				"forged: %d refused upstream, %d refused locally", n, float64(qps), res.wait, res.upstreamAhead, res.forgedServed, res.forgedBounced)
			if res.upstreamAhead != tc.wantAhead || res.forgedBounced != tc.wantBounced || res.forgedServed != tc.wantAhead {
				t.Errorf("upstream calls ahead %d, forged refused upstream %d and locally %d; want %d, %d, %d",
					res.upstreamAhead, res.forgedServed, res.forgedBounced, tc.wantAhead, tc.wantAhead, tc.wantBounced)
			}
			if res.wait > tc.wantWaitAtMost {
				t.Errorf("the legitimate first mint waited %s, want at most %s", res.wait, tc.wantWaitAtMost)
			}
		})
	}
}

// A peer at its bound gets ErrTooManyPendingTokens for a new token, with no
// check of upstream and no new identity, while another peer, and the
// peer's tokens already known, are answered as before.
func TestWorkloadPendingBoundPerPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false, func(o *CacheOptions) { o.MaxPendingTokensPerPeer = 3 })
		f.up.setErr(&cwapi.APIError{Endpoint: cwapi.PathOIDCCreds, StatusCode: http.StatusForbidden, Message: "invalid token"})
		exp := time.Now().Add(time.Hour)
		var toks []string
		for i := range 3 {
			toks = append(toks, wtoken("https://issuer", "sa", exp, i))
			if _, err := f.getAs(t.Context(), mallory, toks[i]); errors.Is(err, ErrTooManyPendingTokens) || err == nil {
				t.Fatalf("token %d under the bound: err %v, want upstream's refusal", i, err)
			}
		}
		_, err := f.getAs(t.Context(), mallory, wtoken("https://issuer", "sa", exp, 3))
		if !errors.Is(err, ErrTooManyPendingTokens) {
			t.Fatalf("token past the bound: err %v, want ErrTooManyPendingTokens", err)
		}
		if got, ids := f.up.count(), f.identities(); got != 3 || ids != 3 {
			t.Errorf("upstream calls %d, identities %d after the refusal; want 3 and 3", got, ids)
		}
		if got := f.obs.get("pods")["token_refused"]; got != 1 {
			t.Errorf("tokens refused = %d, want 1 (observed for the metrics)", got)
		}
		// A known token is no new identity: answered from its backoff.
		if _, err := f.getAs(t.Context(), mallory, toks[0]); errors.Is(err, ErrTooManyPendingTokens) || f.up.count() != 3 {
			t.Errorf("known token: err %v, upstream calls %d; want its remembered refusal and no call", err, f.up.count())
		}
		// Another peer is not held back.
		f.up.setErr(nil)
		if _, err := f.getAs(t.Context(), alice, wtoken("https://issuer", "sa", exp, 100)); err != nil {
			t.Errorf("another peer: %v", err)
		}
	})
}

// Identities that got their key free their peer's bound: a peer can bring
// any number of genuine tokens, three at a time.
func TestWorkloadPendingBoundFreedByKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false, func(o *CacheOptions) { o.MaxPendingTokensPerPeer = 3 })
		f.up.latency = time.Second
		exp := time.Now().Add(time.Hour)
		for round := range 5 {
			var wg sync.WaitGroup
			for i := range 3 {
				wg.Go(func() {
					if _, err := f.getAs(t.Context(), alice, wtoken("https://issuer", "sa", exp, 3*round+i)); err != nil {
						t.Errorf("round %d token %d: %v", round, i, err)
					}
				})
			}
			synctest.Wait() // three first mints in flight: a fourth token waits for one
			if _, err := f.getAs(t.Context(), alice, wtoken("https://issuer", "sa", exp, 1000+round)); !errors.Is(err, ErrTooManyPendingTokens) {
				t.Errorf("round %d: a fourth token while three mint: err %v, want ErrTooManyPendingTokens", round, err)
			}
			wg.Wait()
		}
		if n := f.identities(); n != 15 {
			t.Errorf("identities = %d, want 15", n)
		}
	})
}

// An identity that leaves without a key still counts for PendingTokenHold:
// tokens that expire at once do not free a peer's bound at once.
func TestWorkloadPendingBoundHeldAfterExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWorkloadCache(t, false, func(o *CacheOptions) { o.MaxPendingTokensPerPeer = 2 })
		stop := startRun(f.c)
		defer stop()
		f.up.setErr(&cwapi.APIError{Endpoint: cwapi.PathOIDCCreds, StatusCode: http.StatusForbidden, Message: "invalid token"})
		n := 0
		next := func() error {
			n++
			_, err := f.getAs(t.Context(), mallory, wtoken("https://issuer", "sa", time.Now().Add(2*time.Second), n))
			return err
		}
		for range 2 {
			if err := next(); err == nil || errors.Is(err, ErrTooManyPendingTokens) {
				t.Fatalf("under the bound: %v", err)
			}
		}
		time.Sleep(3 * time.Second) // both tokens expired: their identities are dropped
		synctest.Wait()
		if ids := f.identities(); ids != 0 {
			t.Fatalf("identities after their tokens expired = %d, want 0", ids)
		}
		if err := next(); !errors.Is(err, ErrTooManyPendingTokens) {
			t.Errorf("within the hold: err %v, want ErrTooManyPendingTokens", err)
		}
		time.Sleep(PendingTokenHold)
		if err := next(); err == nil || errors.Is(err, ErrTooManyPendingTokens) {
			t.Errorf("after the hold: err %v, want upstream's refusal", err)
		}
		if got := f.up.count(); got != 3 {
			t.Errorf("upstream calls = %d, want 3", got)
		}
		if got := len(f.c.idents.peers); got != 1 {
			t.Errorf("peers with a charge = %d, want 1 (mallory's last)", got)
		}
	})
}
