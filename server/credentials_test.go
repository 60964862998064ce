package server

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// herdBodies has n goroutines call p.body(creds) at once and returns
// their bodies. The first render is held until every goroutine is about to
// call body, so a herd that did not share one render would render many
// times.
func herdBodies(t *testing.T, p *profile, creds *cwapi.Credentials, n int, renders *atomic.Int32) [][]byte {
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
			b, err := p.body(creds)
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

	for i, creds := range []*cwapi.Credentials{testCreds(), testCreds()} {
		bodies := herdBodies(t, p, creds, n, &renders)
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
