package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// gate blocks the mints of gatedMinters until released one at a time, and
// tracks how many are blocked at once.
type gate struct {
	release        chan struct{}
	mu             sync.Mutex
	inflight, peak int
}

func (g *gate) enter() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight++
	g.peak = max(g.peak, g.inflight)
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight--
}

func (g *gate) counts() (inflight, peak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight, g.peak
}

// gatedMinter mints hour-long keys; unless open, each mint waits for the
// gate to release it.
type gatedMinter struct {
	g     *gate
	open  atomic.Bool
	calls atomic.Int64
}

func (m *gatedMinter) Mint(ctx context.Context) (*cwapi.Credentials, error) {
	n := m.calls.Add(1)
	if !m.open.Load() {
		m.g.enter()
		defer m.g.leave()
		select {
		case <-m.g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &cwapi.Credentials{AccessKeyID: fmt.Sprintf("CWKEY%d", n), SecretAccessKey: "s", Expires: time.Now().Add(time.Hour)}, nil
}

// TestRunCapsConcurrentRefreshes: warming 50 profiles runs at most
// DefaultMaxConcurrentRefreshes mints at once, all 50 end up warm, and a
// client asking for a profile still queued is served at once, ahead of the
// queue, by one mint that the queued refresh does not repeat.
func TestRunCapsConcurrentRefreshes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 50
		g := &gate{release: make(chan struct{})}
		minters := make([]*gatedMinter, n)
		var ps []CacheProfile
		for i := range n {
			minters[i] = &gatedMinter{g: g}
			ps = append(ps, CacheProfile{Name: fmt.Sprintf("p%02d", i), Minter: minters[i]})
		}
		c, err := NewCache(ps, func(o *CacheOptions) { o.Rand = func() float64 { return 0 } })
		if err != nil {
			t.Fatal(err)
		}
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		if inflight, _ := g.counts(); inflight != DefaultMaxConcurrentRefreshes {
			t.Fatalf("mints in flight at start-up = %d, want %d", inflight, DefaultMaxConcurrentRefreshes)
		}

		queued := -1
		for i, m := range minters {
			if m.calls.Load() == 0 {
				queued = i
				break
			}
		}
		minters[queued].open.Store(true)
		start := time.Now()
		// Were this Get behind the queue, every goroutine would be blocked
		// and synctest would report a deadlock.
		k, err := c.Get(t.Context(), ps[queued].Name)
		if err != nil || time.Since(start) != 0 {
			t.Fatalf("Get on queued %s = %v, %v after %s; want a key at once", ps[queued].Name, k, err, time.Since(start))
		}

		// Release the background mints one by one: the cap holds throughout.
		for released := 0; ; released++ {
			synctest.Wait()
			inflight, peak := g.counts()
			if want := min(DefaultMaxConcurrentRefreshes, n-1-released); inflight != want || peak > DefaultMaxConcurrentRefreshes {
				t.Fatalf("after %d released: %d mints in flight (peak %d), want %d", released, inflight, peak, want)
			}
			if inflight == 0 {
				break
			}
			g.release <- struct{}{}
		}
		for _, st := range c.Status() {
			if !st.Healthy {
				t.Errorf("%s not warm: %+v", st.Profile, st)
			}
		}
		for i, m := range minters {
			if got := m.calls.Load(); got != 1 {
				t.Errorf("%s: %d mints, want 1", ps[i].Name, got)
			}
		}
	})
}

// TestMaxConcurrentRefreshesOption: the option sets the cap.
func TestMaxConcurrentRefreshesOption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gate{release: make(chan struct{})}
		var ps []CacheProfile
		for i := range 10 {
			ps = append(ps, CacheProfile{Name: fmt.Sprintf("p%d", i), Minter: &gatedMinter{g: g}})
		}
		c, err := NewCache(ps, func(o *CacheOptions) { o.MaxConcurrentRefreshes = 3 })
		if err != nil {
			t.Fatal(err)
		}
		stop := startRun(c)
		defer stop()
		synctest.Wait()
		if inflight, _ := g.counts(); inflight != 3 {
			t.Errorf("mints in flight = %d, want 3", inflight)
		}
	})
}
