package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// benchWorkloadToken is a stand-in for a projected service-account token:
// the cache only hashes it on a hit (Check is called once per new token),
// so its length, not its content, decides the hit's cost. 1 KiB, the size
// of a Kubernetes token with its claims.
var benchWorkloadToken = "eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("x", 1024-21)

// workloadBenchServer is a Server on a real broker.Cache with an operator
// profile ("op", client token testToken) and a workload profile ("wl",
// token mode), both already holding a key, logging at log's level.
func workloadBenchServer(b *testing.B, log zerolog.Logger) *Server {
	b.Helper()
	exp := time.Now().Add(24 * time.Hour)
	mint := func(context.Context) (*cwapi.Credentials, error) {
		return &cwapi.Credentials{AccessKeyID: "CWAKIDEXAMPLE0001", SecretAccessKey: "cwoSECRETEXAMPLEVALUE", Principal: "coreweave/test", Expires: exp}, nil
	}
	cache, err := broker.NewCache([]broker.CacheProfile{
		{Name: "op", Source: cwapi.SourceAccessKey, Minter: cwapi.MinterFunc(mint)},
		{Name: "wl", Source: cwapi.SourceWorkloadOIDC, Workload: &broker.WorkloadSpec{
			Check: func(context.Context, string) (broker.Identity, error) {
				return broker.Identity{Issuer: "https://issuer.example", Subject: "system:serviceaccount:ml:loader",
					Namespace: "ml", ServiceAccount: "loader", Pod: "loader-0", Expires: exp}, nil
			},
			Mint: func(ctx context.Context, _ string, _ broker.Identity) (*cwapi.Credentials, error) { return mint(ctx) },
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return New(log, cache, Options{ClientTokens: map[string]string{"op": testToken, "wl": ""}})
}

// BenchmarkHandlerHitWorkload is a cache hit of a workload identity (the
// caller's 1 KiB OIDC token as Authorization: hashed with SHA-256, looked
// up under the identity table's read lock, the body rendered) beside the
// same hit of an operator profile on the same broker.Cache, with the audit
// trail on (info) as the daemon runs by default and off (warn).
func BenchmarkHandlerHitWorkload(b *testing.B) {
	for _, level := range []zerolog.Level{zerolog.InfoLevel, zerolog.WarnLevel} {
		for _, c := range []struct{ profile, token string }{{"op", testToken}, {"wl", benchWorkloadToken}} {
			b.Run("profile="+c.profile+",level="+level.String(), func(b *testing.B) {
				s := workloadBenchServer(b, zerolog.New(io.Discard).Level(level).With().Timestamp().Logger())
				benchHitRequest(b, s, fromUID(credsRequest(c.profile, c.token), 1000))
			})
		}
	}
}

// BenchmarkLoopbackHitWorkload is BenchmarkHandlerHitWorkload through a
// real keep-alive loopback connection (client and server costs together,
// NewHTTPServer, audit on): the workload profile's request carries a
// 1 KiB Authorization header, so "op+1KiB" is the operator profile with a
// 1 KiB header of padding added, to separate the cost of a bigger request
// from the cost of the workload lookup.
func BenchmarkLoopbackHitWorkload(b *testing.B) {
	for _, c := range []struct{ name, profile, token, pad string }{
		{"op", "op", testToken, ""},
		{"op+1KiB", "op", testToken, strings.Repeat("p", 1024-len(testToken))},
		{"wl", "wl", benchWorkloadToken, ""},
	} {
		b.Run("profile="+c.name, func(b *testing.B) {
			s := workloadBenchServer(b, zerolog.New(io.Discard).Level(zerolog.InfoLevel).With().Timestamp().Logger())
			ts := httptest.NewUnstartedServer(s)
			ts.Config = NewHTTPServer("", s, zerolog.Nop())
			ts.Start()
			defer ts.Close()
			req, err := http.NewRequest(http.MethodGet, ts.URL+"/v1/credentials/"+c.profile, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Authorization", c.token)
			if c.pad != "" {
				req.Header.Set("X-Pad", c.pad)
			}
			client := ts.Client()
			benchRoundTrips(b, client, req)
		})
	}
}
