package broker

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
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

// inMemory sends requests to h in the calling goroutine, so that a mint
// inside a synctest bubble has no network goroutine that would keep the
// bubble's clock from advancing.
type inMemory struct{ h http.Handler }

func (m inMemory) Do(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	m.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// emulatedWorkloadCache is a token-mode workload profile ("pods") as the
// daemon wires it (cmd/cwcreds/workload.go): claims checked locally, keys
// minted by the emulator with the caller's token. Call it inside the
// bubble, with emu from StartFixture outside it.
func emulatedWorkloadCache(t *testing.T, emu *cwapitest.Emulator, url string, opts ...func(*CacheOptions)) *Cache {
	t.Helper()
	client, err := cwapi.NewClient(url, func(o *cwapi.ClientOptions) { o.HTTPClient = inMemory{emu} })
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

// floodResult is what a peer's legitimate first mint met behind a flood.
type floodResult struct {
	wait          time.Duration // virtual time until it was served
	upstreamAhead int           // OIDC mint requests upstream saw before it
	forgedServed  int           // forged requests answered by an upstream refusal (403)
}

// runForgedFlood: peer "mallory" presents n forged tokens at once, then
// peer "alice" (another local user, or another pod) presents her pod's
// first, genuine token. It returns what alice's mint met.
func runForgedFlood(t *testing.T, n int, qps float64) floodResult {
	emu, url := cwapitest.StartFixture(t)
	iss := emu.Issuer()
	var res floodResult
	synctest.Test(t, func(t *testing.T) {
		c := emulatedWorkloadCache(t, emu, url, func(o *CacheOptions) { o.UpstreamQPS = qps })
		pods := c.Lookup("pods")
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range n {
			forged := iss.Forge(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: fmt.Sprintf("forged-%d", i), Alg: cwapitest.ES256},
				cwapitest.ForgeForeignKey)
			wg.Go(func() {
				_, _, err := pods.GetFor(t.Context(), forged)
				if ue, ok := err.(*UnavailableError); ok && ue.Workload {
					mu.Lock()
					res.forgedServed++
					mu.Unlock()
				}
			})
		}
		synctest.Wait() // every forged request is answered or queued for the budget
		good := iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-0"})
		start := time.Now()
		k, _, err := pods.GetFor(t.Context(), good)
		if err != nil || k == nil {
			t.Fatalf("legitimate token: key %v, err %v", k, err)
		}
		res.wait = time.Since(start)
		res.upstreamAhead = emu.Stats().Requests[cwapitest.EndpointOIDC] - 1
		wg.Wait()
	})
	return res
}

// TestWorkloadForgedFloodDelaysOthers reproduces the attack: a legitimate
// peer's first mint queues behind every forged one.
func TestWorkloadForgedFloodDelaysOthers(t *testing.T) {
	const n, qps = 200, 10
	res := runForgedFlood(t, n, qps)
	t.Logf("%d forged tokens at %g mints/s: legitimate first mint waited %s behind %d upstream calls; %d forged refused upstream",
		n, float64(qps), res.wait, res.upstreamAhead, res.forgedServed)
	if res.upstreamAhead < n-qps {
		t.Errorf("upstream calls before the legitimate mint = %d, want the flood's %d", res.upstreamAhead, n)
	}
}
