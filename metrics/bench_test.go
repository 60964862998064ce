package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/server"
)

// BenchmarkCacheGetHitMetrics is broker's BenchmarkCacheGetHit with and
// without the Prometheus observer: the metrics cost of a hit.
func BenchmarkCacheGetHitMetrics(b *testing.B) {
	for _, withMetrics := range []bool{false, true} {
		name := "metrics=off"
		if withMetrics {
			name = "metrics=on"
		}
		b.Run(name, func(b *testing.B) {
			var obs broker.Observer
			if withMetrics {
				obs, _ = newTestMetrics(b)
			}
			c, err := broker.NewCache([]broker.CacheProfile{{Name: "p", Minter: &switchMinter{}}},
				func(o *broker.CacheOptions) { o.Observer = obs })
			if err != nil {
				b.Fatal(err)
			}
			ctx := b.Context()
			if _, err := c.Get(ctx, "p"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Get(ctx, "p"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandlerHitObserved is the full hit path (server, cache) as the
// daemon runs it, with metrics and the audit log (JSON to io.Discard) off
// and on.
func BenchmarkHandlerHitObserved(b *testing.B) {
	for _, bc := range []struct {
		name    string
		metrics bool
		level   zerolog.Level
	}{
		{"metrics=off,audit=off", false, zerolog.WarnLevel},
		{"metrics=on,audit=off", true, zerolog.WarnLevel},
		{"metrics=on,audit=on", true, zerolog.InfoLevel},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var cacheObs broker.Observer
			var reqs server.RequestMetrics
			if bc.metrics {
				m, _ := newTestMetrics(b)
				cacheObs, reqs = m, m
			}
			c, err := broker.NewCache([]broker.CacheProfile{{Name: "p", Minter: &switchMinter{}}},
				func(o *broker.CacheOptions) { o.Observer = cacheObs })
			if err != nil {
				b.Fatal(err)
			}
			log := zerolog.New(discard{}).Level(bc.level).With().Timestamp().Logger()
			s := server.New(log, c, server.Options{ClientTokens: map[string]string{"p": testToken}, Requests: reqs})
			r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:7911/v1/credentials/p", nil)
			r.Header.Set("Authorization", testToken)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				s.ServeHTTP(w, r)
			}
			if w.status != http.StatusOK {
				b.Fatalf("status = %d", w.status)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
