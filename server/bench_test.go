package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
)

// discardWriter is a ResponseWriter as cheap as possible, so benchmarks
// measure the handler, not the recorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

// benchHit measures s serving a warm testProfile request, one at a time.
func benchHit(b *testing.B, s *Server) {
	benchHitRequest(b, s, credsRequest(testProfile, testToken))
}

// benchHitRequest measures s serving r, one at a time.
func benchHitRequest(b *testing.B, s *Server, r *http.Request) {
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		s.ServeHTTP(w, r)
	}
	if w.status != http.StatusOK {
		b.Fatalf("status = %d, want 200", w.status)
	}
}

// BenchmarkHandlerHit is the hot path: a warm profile through the full chain
// (ServeHTTP's fast path, guards, recoverer, auth, cached body).
func BenchmarkHandlerHit(b *testing.B) {
	benchHit(b, New(zerolog.Nop(), &fakeKeys{creds: testCreds()}, Options{ClientTokens: map[string]string{testProfile: testToken}}))
}

// BenchmarkHandlerHitChiOnly is BenchmarkHandlerHit with ServeHTTP's fast
// path off: every request routed by chi, as before the fast path.
func BenchmarkHandlerHitChiOnly(b *testing.B) {
	s := New(zerolog.Nop(), &fakeKeys{creds: testCreds()}, Options{ClientTokens: map[string]string{testProfile: testToken}})
	s.fastCreds = nil
	benchHit(b, s)
}

// BenchmarkHandlerHitPeersWired is BenchmarkHandlerHit with Peers wired and
// another profile restricted, as the daemon runs: an unrestricted profile
// must not pay for peer identification.
func BenchmarkHandlerHitPeersWired(b *testing.B) {
	benchHit(b, New(zerolog.Nop(), &fakeKeys{creds: testCreds()}, Options{
		ClientTokens: map[string]string{testProfile: testToken, "locked": testToken},
		Access:       map[string]Access{"locked": {UIDs: []uint32{1}}},
		Peers:        &fakePeers{uid: 1},
	}))
}

// BenchmarkHandlerHitParallel is the hot path under concurrency.
func BenchmarkHandlerHitParallel(b *testing.B) {
	s := New(zerolog.Nop(), &fakeKeys{creds: testCreds()}, Options{ClientTokens: map[string]string{testProfile: testToken}})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := credsRequest(testProfile, testToken)
		w := &discardWriter{h: make(http.Header)}
		for pb.Next() {
			w.reset()
			s.ServeHTTP(w, r)
		}
	})
}

// BenchmarkBareHandler is the floor: a net/http handler writing a constant
// body with the same headers.
func BenchmarkBareHandler(b *testing.B) {
	body := []byte(`{"AccessKeyId":"CWAKIDEXAMPLE0001","SecretAccessKey":"cwoSECRETEXAMPLEVALUE","Token":"","Expiration":"2030-01-02T03:04:05Z"}`)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeBody(w, http.StatusOK, body) })
	r := credsRequest(testProfile, testToken)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
}

// BenchmarkChiFloor is chi alone: one parameterised route writing a
// constant body, no middleware. chi v5.5.0 allocates a request copy, a
// context value and the request's path-value map for every request; the
// difference between this and BenchmarkHandlerHit is this package's cost.
func BenchmarkChiFloor(b *testing.B) {
	body := []byte(`{"AccessKeyId":"CWAKIDEXAMPLE0001","SecretAccessKey":"cwoSECRETEXAMPLEVALUE","Token":"","Expiration":"2030-01-02T03:04:05Z"}`)
	mux := chi.NewRouter()
	mux.Get("/v1/credentials/{profile}", func(w http.ResponseWriter, r *http.Request) { writeBody(w, http.StatusOK, body) })
	r := credsRequest(testProfile, testToken)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		mux.ServeHTTP(w, r)
	}
}

// benchLoopback measures full HTTP round trips over one keep-alive loopback
// connection to h served by NewHTTPServer.
func benchLoopback(b *testing.B, h http.Handler) {
	ts := httptest.NewUnstartedServer(h)
	ts.Config = NewHTTPServer("", h, zerolog.Nop())
	ts.Start()
	defer ts.Close()
	req, err := http.NewRequest(http.MethodGet, ts.URL+"/v1/credentials/"+testProfile, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", testToken)
	benchRoundTrips(b, ts.Client(), req)
}

// benchRoundTrips sends req with client until the benchmark ends,
// reading each answer whole and failing on any status but 200.
func benchRoundTrips(b *testing.B, client *http.Client, req *http.Request) {
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status = %d", resp.StatusCode)
		}
	}
}

// BenchmarkLoopbackHit is a warm GET through a real loopback connection
// (client and server costs together).
func BenchmarkLoopbackHit(b *testing.B) {
	benchLoopback(b, New(zerolog.Nop(), &fakeKeys{creds: testCreds()}, Options{ClientTokens: map[string]string{testProfile: testToken}}))
}

// BenchmarkLoopbackBare is BenchmarkLoopbackHit's floor: the same round
// trip to a bare handler writing a constant body.
func BenchmarkLoopbackBare(b *testing.B) {
	body := []byte(`{"AccessKeyId":"CWAKIDEXAMPLE0001","SecretAccessKey":"cwoSECRETEXAMPLEVALUE","Token":"","Expiration":"2030-01-02T03:04:05Z"}`)
	benchLoopback(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeBody(w, http.StatusOK, body) }))
}

// BenchmarkHandlerHitAudit is BenchmarkHandlerHit with the audit log off
// (level warn) and on (level info, JSON with a timestamp, as the daemon
// logs), writing to io.Discard so it measures the handler and zerolog, not
// the log's destination. With the audit trail on, a hit of a tracked
// (key, peer) pair only counts; "on,conn-peer" has the peer attached to
// the connection as LimitConnections does in the daemon.
func BenchmarkHandlerHitAudit(b *testing.B) {
	for _, bc := range []struct {
		name  string
		level zerolog.Level
		uid   bool
	}{{"off", zerolog.WarnLevel, false}, {"on", zerolog.InfoLevel, false}, {"on,conn-peer", zerolog.InfoLevel, true}} {
		b.Run("audit="+bc.name, func(b *testing.B) {
			log := zerolog.New(io.Discard).Level(bc.level).With().Timestamp().Logger()
			s := New(log, &fakeKeys{creds: testCreds()}, Options{ClientTokens: map[string]string{testProfile: testToken}})
			r := credsRequest(testProfile, testToken)
			if bc.uid {
				r = fromUID(r, 1000)
			}
			benchHitRequest(b, s, r)
		})
	}
}

// BenchmarkHandlerHitGroupAllowed is BenchmarkHandlerHit for a profile
// restricted by ALLOWED_GIDS, the peer allowed through one of its groups:
// the access check's cost on a kept-alive connection.
func BenchmarkHandlerHitGroupAllowed(b *testing.B) {
	benchHit(b, New(zerolog.Nop(), &fakeKeys{creds: testCreds()}, Options{
		ClientTokens: map[string]string{testProfile: testToken},
		Access:       map[string]Access{testProfile: {GIDs: []uint32{2000}}},
		Peers:        &fakePeers{uid: 1001, gids: []uint32{100, 2000}},
	}))
}
