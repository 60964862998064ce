package broker

// Benchmarks of workload identities (issue 14, item 6): the memory the
// cache holds per identity, and a simulation of the upstream mints a node
// of workloads costs through the cache versus calling CoreWeave directly.

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// simIssuer is a realistic issuer URL (an OIDC issuer of a cluster).
const simIssuer = "https://oidc.cks.coreweave.com/id/0123456789abcdef0123456789abcdef"

// simToken is a stand-in for a projected service-account token of
// workload w, the n-th it was issued, expiring at exp: the fields
// simCheck reads, then padding to 1 KiB, the size of a real one with its
// Kubernetes claims and RS256 signature (the cache keeps every token it
// accepted, so its size counts).
func simToken(w, n int, exp time.Time) string {
	s := fmt.Sprintf("sim|%d|%d|%d|", w, n, exp.Unix())
	return s + strings.Repeat("x", 1024-len(s))
}

// simCheck parses simToken's fields into the identity a real Check would
// find in the claims: subject per workload, Kubernetes claims, expiry.
func simCheck(_ context.Context, raw string) (Identity, error) {
	p := strings.SplitN(raw, "|", 5)
	if len(p) != 5 || p[0] != "sim" {
		return Identity{}, fmt.Errorf("%w: malformed", errFakeRefused)
	}
	sec, _ := strconv.ParseInt(p[3], 10, 64)
	exp := time.Unix(sec, 0)
	if !time.Now().Before(exp) {
		return Identity{}, fmt.Errorf("%w: expired", errFakeRefused)
	}
	sa := "loader-" + p[1]
	return Identity{Issuer: simIssuer, Subject: "system:serviceaccount:training:" + sa, Namespace: "training",
		ServiceAccount: sa, Pod: sa + "-7f9c8d6b5-x2x4z", Node: "gpu-node-0042", Expires: exp}, nil
}

// simMinter mints keys of a fixed lifetime and counts them.
type simMinter struct {
	lifetime time.Duration
	mu       sync.Mutex
	n        int
}

func (m *simMinter) mint(context.Context, string, Identity) (*cwapi.Credentials, error) {
	m.mu.Lock()
	m.n++
	n := m.n
	m.mu.Unlock()
	return &cwapi.Credentials{AccessKeyID: fmt.Sprintf("CW%018d", n), SecretAccessKey: "cwo" + strings.Repeat("s", 40),
		Principal: "role/" + simIssuer + ":system:serviceaccount:training:loader", Expires: time.Now().Add(m.lifetime).UTC()}, nil
}

func (m *simMinter) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

func simCache(tb testing.TB, share bool, m *simMinter, opts ...func(*CacheOptions)) *Cache {
	tb.Helper()
	c, err := NewCache([]CacheProfile{{Name: "pods", Source: cwapi.SourceWorkloadOIDC,
		Workload: &WorkloadSpec{Check: simCheck, Mint: m.mint, ShareIdentity: share}}}, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// BenchmarkWorkloadIdentitiesMemory fills a running cache (Run started, so
// every identity has its refresh loop, as in the daemon) with 10,000
// identities, each bought by its own 1 KiB token: in token mode 10,000
// distinct tokens, in identity mode 10,000 subjects. It reports, per
// identity, the live heap it adds (runtime.MemStats.HeapAlloc after a GC,
// before and after the fill, so the tokens the cache keeps count and
// garbage does not), the goroutine stack memory (StackInuse) and the
// goroutines. Run with -benchtime=1x: one fill is the measurement.
func BenchmarkWorkloadIdentitiesMemory(b *testing.B) {
	const n = DefaultMaxWorkloadIdentities
	for _, share := range []bool{false, true} {
		b.Run(map[bool]string{false: "share=token", true: "share=identity"}[share], func(b *testing.B) {
			for b.Loop() {
				heapB, stackB, gor := fillIdentities(b, share, n)
				b.ReportMetric(heapB/n, "heap-B/identity")
				b.ReportMetric(stackB/n, "stack-B/identity")
				b.ReportMetric(gor/n, "goroutines/identity")
			}
		})
	}
}

func fillIdentities(b *testing.B, share bool, n int) (heapB, stackB, goroutines float64) {
	m := &simMinter{lifetime: time.Hour}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	c := simCache(b, share, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	exp := time.Now().Add(time.Hour)
	pe := c.Lookup("pods")
	for w := range n {
		// Built here and not kept: the cache's own copy is what counts.
		if _, _, err := pe.GetFor(ctx, Peer{}, simToken(w, 0, exp)); err != nil {
			b.Fatalf("identity %d: %v", w, err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()
	if got := m.count(); got != n {
		b.Fatalf("%d mints for %d identities", got, n)
	}
	heapB = float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
	stackB = float64(int64(after.StackInuse) - int64(before.StackInuse))
	goroutines = float64(g1 - g0 - 1) // Run's own
	runtime.KeepAlive(c)
	cancel()
	<-done
	return heapB, stackB, goroutines
}

// The mint simulation: a node running simWorkloads pods (workloads) of
// simProcs processes each, for simRun of fake time (testing/synctest), each
// process making an S3 call every simCallEvery and, before each call,
// doing what its SDK's credential provider does with a container
// credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI with
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE):
//
//   - botocore: fetches when the key it holds has less than 15 minutes
//     left (its advisory refresh window), reading the token file then;
//   - aws-sdk-go-v2: fetches when the key it holds has expired (its
//     credentials cache, ExpiryWindow 0).
//
// Each pod's projected token lives 1 hour and is rotated by the kubelet at
// 80 % of its life (every 48 minutes); the pods' rotations are spread over
// those 48 minutes, and the processes start spread over the first minute.
//
// Direct: every fetch is a call to CoreWeave's container endpoint
// (GET …/temporary-credentials/oidc/<orgId>), which mints a 15-minute key.
// Through cwcreds: every fetch is GetFor on the real broker.Cache (its
// refresh loops running, Rand 0.5 for the jitter), whose Mint (counted)
// returns a 1-hour key (DURATION=1h), in token mode and in identity mode
// (one subject per pod). What is measured is the cache's upstream mints
// and, as a check, that no fetch was refused or handed a key with less
// than 15 minutes left; what is modelled is the clients' fetch rules and
// the kubelet's rotation above.
const (
	simWorkloads  = 200
	simProcs      = 10
	simRun        = 2 * time.Hour
	simCallEvery  = 10 * time.Second
	simTokenTTL   = time.Hour
	simRotate     = simTokenTTL * 8 / 10
	simDirectKey  = 15 * time.Minute
	simCwcredsKey = time.Hour
	simBotoWindow = 15 * time.Minute
)

type simSDK struct {
	name   string
	window time.Duration // fetch when less than this is left
}

var simSDKs = []simSDK{{"botocore", simBotoWindow}, {"aws-sdk-go-v2", 0}}

// simTokenAt is pod w's current token at t (t from the start): its
// tokens are issued every simRotate from a per-pod offset in [-simRotate, 0).
func simTokenAt(start time.Time, w int, t time.Duration) string {
	offset := -simRotate * time.Duration(w+1) / simWorkloads
	n := int((t - offset) / simRotate)
	issued := start.Add(offset + time.Duration(n)*simRotate)
	return simToken(w, n, issued.Add(simTokenTTL))
}

// simEvent is a process's next fetch.
type simEvent struct {
	at   time.Duration // from the start
	proc int
}

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || (q[i].at == q[j].at && q[i].proc < q[j].proc)
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// simClients runs every process's fetch rule for sdk from start for
// simRun: fetch(proc, token) returns the key's expiry; sleepUntil moves
// time. It returns the fetches made.
func simClients(start time.Time, sdk simSDK, fetch func(proc int, token string, at time.Time) time.Time, sleepUntil func(time.Time)) int {
	n := simWorkloads * simProcs
	q := make(simQueue, 0, n)
	for p := range n {
		q = append(q, simEvent{at: time.Minute * time.Duration(p) / time.Duration(n), proc: p})
	}
	heap.Init(&q)
	fetches := 0
	for q.Len() > 0 {
		ev := heap.Pop(&q).(simEvent)
		at := start.Add(ev.at)
		sleepUntil(at)
		exp := fetch(ev.proc, simTokenAt(start, ev.proc/simProcs, ev.at), at)
		fetches++
		// The process calls S3 every simCallEvery from its first call on,
		// and fetches at the first call that finds less than the window left.
		next := exp.Add(-sdk.window).Sub(start)
		phase := ev.at % simCallEvery
		if next <= ev.at {
			next = ev.at + simCallEvery
		} else if r := (next - phase) % simCallEvery; r != 0 {
			next += simCallEvery - r
		}
		if next < simRun {
			heap.Push(&q, simEvent{at: next, proc: ev.proc})
		}
	}
	return fetches
}

// simResult is one row of the simulation's table.
type simResult struct {
	sdk, how     string
	fetches      int
	mints        int
	maxIdent     int
	shortestLeft time.Duration
}

// simulateDirect: every fetch mints a 15-minute key upstream.
func simulateDirect(sdk simSDK) simResult {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := simClients(start, sdk, func(_ int, _ string, at time.Time) time.Time { return at.Add(simDirectKey) }, func(time.Time) {})
	return simResult{sdk: sdk.name, how: "direct to CoreWeave (15-min keys)", fetches: f, mints: f, shortestLeft: simDirectKey}
}

// simulateCwcreds runs the clients against a real Cache in a synctest
// bubble; t's errors are the check.
func simulateCwcreds(t *testing.T, sdk simSDK, share bool) simResult {
	r := simResult{sdk: sdk.name, how: "through cwcreds, SHARE=" + map[bool]string{false: "token", true: "identity"}[share] + " (1-h keys)", shortestLeft: simRun}
	synctest.Test(t, func(t *testing.T) {
		m := &simMinter{lifetime: simCwcredsKey}
		c := simCache(t, share, m, func(o *CacheOptions) { o.Rand = func() float64 { return 0.5 } })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		pe := c.Lookup("pods")
		start := time.Now()
		r.fetches = simClients(start, sdk, func(proc int, token string, at time.Time) time.Time {
			k, _, err := pe.GetFor(ctx, Peer{}, token)
			if err != nil {
				t.Fatalf("process %d at %s: %v", proc, at.Sub(start), err)
			}
			r.shortestLeft = min(r.shortestLeft, k.Expires.Sub(at))
			for _, st := range c.Status() {
				if st.Workload != nil {
					r.maxIdent = max(r.maxIdent, st.Workload.Identities)
				}
			}
			return k.Expires
		}, func(at time.Time) {
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
		})
		if d := time.Until(start.Add(simRun)); d > 0 {
			time.Sleep(d) // the background refreshes to the end of the run
		}
		r.mints = m.count()
		cancel()
		<-done
	})
	return r
}

// TestWorkloadMintsSimulated runs the simulation above and prints its
// table (go test -run TestWorkloadMintsSimulated -v ./broker). It checks
// that every fetch through cwcreds was served a key with at least 15
// minutes left, and that the cache's mints stay within what its policy
// allows: per identity, one mint when it is first seen and a refresh each
// 2/3 of a key's life while it holds an unexpired token.
func TestWorkloadMintsSimulated(t *testing.T) {
	if testing.Short() {
		t.Skip("a 2-hour simulation of 2,000 processes")
	}
	var rows []simResult
	for _, sdk := range simSDKs {
		rows = append(rows, simulateDirect(sdk))
		for _, share := range []bool{false, true} {
			r := simulateCwcreds(t, sdk, share)
			if r.shortestLeft < simBotoWindow {
				t.Errorf("%s %s: a fetch was served a key with %s left, want at least %s", r.sdk, r.how, r.shortestLeft, simBotoWindow)
			}
			// Identity mode: a key per pod, refreshed while the pod holds
			// a token: at most 1 + run/(2/3 h) mints each.
			// Token mode: an identity per token, each held at most a token's
			// life (1 h): at most 1 + 1h/(2/3 h) = 2 mints per token issued.
			tokens := simWorkloads * (int(simRun/simRotate) + 2)
			bound := simWorkloads * (1 + int(simRun/(simCwcredsKey*2/3)))
			if !share {
				bound = 2 * tokens
			}
			if r.mints > bound {
				t.Errorf("%s %s: %d mints, want at most %d", r.sdk, r.how, r.mints, bound)
			}
			rows = append(rows, r)
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, "\n%d workloads × %d processes, %s simulated, an S3 call every %s per process, tokens of %s rotated every %s:\n\n",
		simWorkloads, simProcs, simRun, simCallEvery, simTokenTTL, simRotate)
	s.WriteString("| client SDK | credentials from | credential fetches | upstream mints | mints per workload-hour | identities cached (max) | least key life left at a fetch |\n")
	s.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		ident := "—"
		if r.maxIdent > 0 {
			ident = strconv.Itoa(r.maxIdent)
		}
		fmt.Fprintf(&s, "| %s | %s | %d | %d | %.2f | %s | %s |\n", r.sdk, r.how, r.fetches, r.mints,
			float64(r.mints)/(simWorkloads*simRun.Hours()), ident, r.shortestLeft.Round(time.Second))
	}
	t.Log(s.String())
}

// The forged-token flood (token mode): the daemon checks a token's claims,
// not its signature, so a local user can present any number of
// well-formed forged tokens, each a new identity that upstream refuses.
// floodLegit workloads hold a key; forged identities fill the rest of a
// table of the default size, as after a flood has begun.
const floodLegit = 100

// forgedToken is a well-formed token (simCheck accepts it) of a forged
// identity, n-th of a flood; floodMint refuses it.
func forgedToken(n int, exp time.Time) string {
	s := fmt.Sprintf("sim|forged%d|0|%d|", n, exp.Unix())
	return s + strings.Repeat("x", 1024-len(s))
}

// floodMint mints for the legit workloads and refuses forged tokens at
// once, as upstream does (403), without a network round trip: what is
// measured is the identity table.
func floodMint(m *simMinter) func(context.Context, string, Identity) (*cwapi.Credentials, error) {
	return func(ctx context.Context, token string, id Identity) (*cwapi.Credentials, error) {
		if strings.Contains(id.Subject, "forged") {
			return nil, &cwapi.APIError{Endpoint: cwapi.PathOIDCCreds, StatusCode: http.StatusForbidden}
		}
		return m.mint(ctx, token, id)
	}
}

// floodTable returns a token-mode cache whose identity table of the
// default size is full: floodLegit identities holding a key, the rest
// forged, refused, and more recently used. It returns the legit tokens.
// One peer can no longer bring more than DefaultMaxPendingTokensPerPeer
// forged identities: these stand for as many peers' (the bound is off,
// and every request comes from the zero Peer).
func floodTable(b *testing.B) (*Cache, []string) {
	b.Helper()
	m := &simMinter{lifetime: time.Hour}
	c, err := NewCache([]CacheProfile{{Name: "pods", Source: cwapi.SourceWorkloadOIDC,
		Workload: &WorkloadSpec{Check: simCheck, Mint: floodMint(m)}}}, func(o *CacheOptions) { o.MaxPendingTokensPerPeer = -1 })
	if err != nil {
		b.Fatal(err)
	}
	pe := c.Lookup("pods")
	exp := time.Now().Add(time.Hour)
	legit := make([]string, floodLegit)
	for w := range legit {
		legit[w] = simToken(w, 0, exp)
		if _, _, err := pe.GetFor(b.Context(), Peer{}, legit[w]); err != nil {
			b.Fatalf("legit identity %d: %v", w, err)
		}
	}
	for n := range DefaultMaxWorkloadIdentities - floodLegit {
		if _, _, err := pe.GetFor(b.Context(), Peer{}, forgedToken(-1-n, exp)); err == nil {
			b.Fatalf("forged token %d was served", n)
		}
	}
	if got := c.Status()[0].Workload.Identities; got != DefaultMaxWorkloadIdentities {
		b.Fatalf("table holds %d identities, want it full (%d)", got, DefaultMaxWorkloadIdentities)
	}
	return c, legit
}

// BenchmarkWorkloadAdoptFullTable is a new forged identity into a full
// table of the default size (floodTable), which drops one identity for
// it: "request" is the whole request (GetFor with a token never seen:
// Check, adopt, upstream's refusal); "adopt" is the table's part alone
// (Cache.adopt: the write-locked choice of the identity to drop and the
// insertion, then the drop).
func BenchmarkWorkloadAdoptFullTable(b *testing.B) {
	b.Run("request", func(b *testing.B) {
		c, _ := floodTable(b)
		pe := c.Lookup("pods")
		exp := time.Now().Add(time.Hour)
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			n++
			if _, _, err := pe.GetFor(b.Context(), Peer{}, forgedToken(n, exp)); err == nil {
				b.Fatalf("forged token %d was served", n)
			}
		}
		if got := c.Status()[0].Workload.Identities; got != DefaultMaxWorkloadIdentities {
			b.Fatalf("table holds %d identities, want %d", got, DefaultMaxWorkloadIdentities)
		}
	})
	b.Run("adopt", func(b *testing.B) {
		c, _ := floodTable(b)
		pe := c.lookup("pods")
		exp := time.Now().Add(time.Hour)
		// The checked tokens, made in batches outside the timer.
		type checked struct {
			sum  [sha256.Size]byte
			held *heldToken
		}
		batch := make([]checked, 0, 4096)
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			if len(batch) == 0 {
				b.StopTimer()
				for range cap(batch) {
					n++
					tok := forgedToken(n, exp)
					id, err := simCheck(b.Context(), tok)
					if err != nil {
						b.Fatal(err)
					}
					batch = append(batch, checked{tokenHash(tok), &heldToken{raw: tok, id: id}})
				}
				b.StartTimer()
			}
			ct := batch[len(batch)-1]
			batch = batch[:len(batch)-1]
			if _, err := c.adopt(pe, Peer{}, ct.sum, ct.held, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
		if got := c.Status()[0].Workload.Identities; got != DefaultMaxWorkloadIdentities {
			b.Fatalf("table holds %d identities, want %d", got, DefaultMaxWorkloadIdentities)
		}
	})
}

// BenchmarkWorkloadHitDuringFlood is a legit workload's cache hit (its
// known token: one read lock of the identity table) while flooders
// goroutines present new forged tokens into the full table (floodTable)
// as fast as they can, each at most floodMax of them, until the hits end.
// Besides ns/op it reports the hits' latency percentiles and how many
// forged identities were adopted per hit. allocs/op counts the flooders'
// too; the hit alone allocates nothing (TestWorkloadHitAllocs).
func BenchmarkWorkloadHitDuringFlood(b *testing.B) {
	const floodMax = 1 << 20
	for _, flooders := range []int{0, 1, 2} {
		b.Run(fmt.Sprintf("flooders=%d", flooders), func(b *testing.B) {
			c, legit := floodTable(b)
			pe := c.Lookup("pods")
			exp := time.Now().Add(time.Hour)
			var stop atomic.Bool
			var forged atomic.Int64
			var wg sync.WaitGroup
			for f := range flooders {
				wg.Go(func() {
					for i := 0; i < floodMax && !stop.Load(); i++ {
						if _, _, err := pe.GetFor(context.Background(), Peer{}, forgedToken(f*floodMax+i, exp)); err == nil {
							b.Errorf("forged token %d was served", i)
							return
						}
						forged.Add(1)
					}
				})
			}
			lat := make([]time.Duration, 0, 1<<20)
			i := 0
			for b.Loop() {
				t0 := time.Now()
				k, _, err := pe.GetFor(b.Context(), Peer{}, legit[i%len(legit)])
				lat = append(lat, time.Since(t0))
				if err != nil || k == nil {
					b.Fatalf("legit hit: %v", err)
				}
				i++
			}
			stop.Store(true)
			wg.Wait()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) }
			b.ReportMetric(q(0.5), "p50-ns")
			b.ReportMetric(q(0.99), "p99-ns")
			b.ReportMetric(q(0.999), "p99.9-ns")
			b.ReportMetric(q(1), "max-ns")
			b.ReportMetric(float64(forged.Load())/float64(len(lat)), "forged/op")
		})
	}
}
