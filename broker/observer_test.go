package broker

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// countingObserver records every cache event per profile.
type countingObserver struct {
	mu     sync.Mutex
	counts map[string]map[string]int // profile -> event -> count
}

func (o *countingObserver) Profile(name string) ProfileObserver {
	return &countingProfile{o: o, name: name}
}

func (o *countingObserver) add(profile, event string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.counts == nil {
		o.counts = map[string]map[string]int{}
	}
	if o.counts[profile] == nil {
		o.counts[profile] = map[string]int{}
	}
	o.counts[profile][event]++
}

func (o *countingObserver) get(profile string) map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]int{}
	for k, v := range o.counts[profile] {
		out[k] = v
	}
	return out
}

type countingProfile struct {
	o    *countingObserver
	name string
}

func (p *countingProfile) Hit()                       { p.o.add(p.name, "hit") }
func (p *countingProfile) StaleHit()                  { p.o.add(p.name, "stale") }
func (p *countingProfile) Miss()                      { p.o.add(p.name, "miss") }
func (p *countingProfile) MintStarted(string)         { p.o.add(p.name, "started") }
func (p *countingProfile) IdentityAdded()             { p.o.add(p.name, "identity_added") }
func (p *countingProfile) IdentityEvicted(why string) { p.o.add(p.name, "identity_"+why) }
func (p *countingProfile) TokenRefused(error)         { p.o.add(p.name, "token_refused") }
func (p *countingProfile) MintDone(err error) {
	if err != nil {
		p.o.add(p.name, "failed")
	} else {
		p.o.add(p.name, "minted")
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestObserverSeesHitsMissesAndStaleServes walks one profile through a cold
// miss, hits, a failing refresh (stale serves) and an outage.
func TestObserverSeesHitsMissesAndStaleServes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour}
		obs := &countingObserver{}
		c, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m}},
			func(o *CacheOptions) { o.Rand = func() float64 { return 0 }; o.Observer = obs })
		if err != nil {
			t.Fatal(err)
		}
		get := func() {
			t.Helper()
			_, _ = c.Get(t.Context(), "p")
		}
		get() // cold: miss and one mint
		get()
		get()
		if got, want := obs.get("p"), map[string]int{"miss": 1, "started": 1, "minted": 1, "hit": 2}; !mapsEqual(got, want) {
			t.Errorf("after a cold get and two hits: %v, want %v", got, want)
		}

		m.setErr(&cwapi.APIError{Endpoint: cwapi.PathAccessKey, StatusCode: http.StatusServiceUnavailable, Code: 14})
		stop := startRun(c)
		defer stop()
		time.Sleep(41 * time.Minute) // past the refresh point: the refresh fails
		synctest.Wait()
		before := obs.get("p")
		get()
		after := obs.get("p")
		if after["stale"] != before["stale"]+1 || after["hit"] != before["hit"] {
			t.Errorf("a get while refresh fails: %v -> %v, want one more stale serve", before, after)
		}
		if after["failed"] == 0 || after["started"] != after["minted"]+after["failed"] {
			t.Errorf("mints started %d, ended ok %d, failed %d: want every start ended", after["started"], after["minted"], after["failed"])
		}
	})
}

func TestStatusReasonAndLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, latency: 250 * time.Millisecond}
		c := newTestCache(t, m)
		st := c.Status()[0]
		if st.Healthy || st.Reason != "no key minted yet" {
			t.Errorf("before any mint: healthy %v, reason %q; want unhealthy, %q", st.Healthy, st.Reason, "no key minted yet")
		}
		if _, err := c.Get(t.Context(), "p"); err != nil {
			t.Fatal(err)
		}
		st = c.Status()[0]
		if !st.Healthy || st.Reason != "" || st.LastMintLatencySeconds != 0.25 {
			t.Errorf("after a mint: healthy %v, reason %q, latency %v; want healthy, no reason, 0.25", st.Healthy, st.Reason, st.LastMintLatencySeconds)
		}
		m.setErr(errors.New("upstream exploded"))
		time.Sleep(time.Hour)
		_, _ = c.Get(t.Context(), "p")
		st = c.Status()[0]
		// The minter's own text is never published (issue 11, finding 5).
		if want := `profile "p" has no valid key: minting a key failed; the daemon's log says why`; st.Healthy || len(st.Reason) < len(want) || st.Reason[:len(want)] != want {
			t.Errorf("after expiry and a failed mint: healthy %v, reason %q; want it to start %q", st.Healthy, st.Reason, want)
		}
	})
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestObserverCountsRejectedMintAsFailure: a mint upstream answered but the
// cache refused (expires too soon, no key) is a failed mint for the
// observer, so mints_total{result="ok"} and the failure count agree.
func TestObserverCountsRejectedMintAsFailure(t *testing.T) {
	for name, m := range map[string]cwapi.Minter{
		"expires too soon": &fakeMinter{lifetime: 5 * time.Second},
		"no key":           cwapi.MinterFunc(func(context.Context) (*cwapi.Credentials, error) { return nil, nil }),
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				obs := &countingObserver{}
				c, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m}},
					func(o *CacheOptions) { o.Observer = obs })
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Get(t.Context(), "p"); !errors.Is(err, cwapi.ErrBadReply) {
					t.Fatalf("Get = %v, want ErrBadReply", err)
				}
				if got, want := obs.get("p"), map[string]int{"miss": 1, "started": 1, "failed": 1}; !mapsEqual(got, want) {
					t.Errorf("observed %v, want %v", got, want)
				}
			})
		})
	}
}
