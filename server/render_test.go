package server

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// herdBodies has n goroutines call p.body(creds, now) at once and returns
// their bodies. The first render is held until every goroutine is about to
// call body, so a herd that did not share one render would render many
// times.
func herdBodies(t *testing.T, p *profile, creds *cwapi.Credentials, now func() time.Time, n int, renders *atomic.Int32) [][]byte {
	t.Helper()
	var arrived atomic.Int32
	allArrived := make(chan struct{})
	var held atomic.Bool
	p.onRender = func() {
		renders.Add(1)
		if held.CompareAndSwap(false, true) {
			<-allArrived
		}
	}
	bodies := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if arrived.Add(1) == int32(n) {
				close(allArrived)
			}
			b, err := p.body(creds, now)
			if err != nil {
				t.Errorf("body: %v", err)
			}
			bodies[i] = b
		})
	}
	wg.Wait()
	return bodies
}

// TestBodyRendersOncePerKey: a herd asking for a key nobody rendered yet
// renders it once and every member gets that one body (the same slice);
// the next key is rendered once more.
func TestBodyRendersOncePerKey(t *testing.T) {
	const n = 200
	p := &profile{name: testProfile}
	var renders atomic.Int32
	now := func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

	for i, creds := range []*cwapi.Credentials{testCreds(), testCreds()} {
		bodies := herdBodies(t, p, creds, now, n, &renders)
		if got := renders.Load(); got != int32(i+1) {
			t.Fatalf("key %d: %d renders in all, want %d (one per key)", i, got, i+1)
		}
		for _, b := range bodies {
			if len(b) == 0 || &b[0] != &bodies[0][0] {
				t.Fatalf("key %d: the herd got different body slices", i)
			}
		}
	}
}

// TestBodyStalePermanentKeyRerenderedOnce: once a permanent key's body is
// stale, a herd re-renders it once, and nobody gets the stale body.
func TestBodyStalePermanentKeyRerenderedOnce(t *testing.T) {
	creds := testCreds()
	creds.Expires = time.Time{}
	p := &profile{name: testProfile}
	var renders atomic.Int32
	var clock atomic.Pointer[time.Time]
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	clock.Store(&t0)
	now := func() time.Time { return *clock.Load() }

	old := herdBodies(t, p, creds, now, 50, &renders)[0]
	later := t0.Add(permanentKeyRerender)
	clock.Store(&later)
	bodies := herdBodies(t, p, creds, now, 200, &renders)
	if got := renders.Load(); got != 2 {
		t.Fatalf("%d renders, want 2 (first, then once when stale)", got)
	}
	want := []byte(`"Expiration":"2026-11-23T11:30:00Z"`)
	for _, b := range bodies {
		if bytes.Equal(b, old) || !bytes.Contains(b, want) {
			t.Fatalf("after staleAt got %s, want a body with %s", b, want)
		}
	}
}
