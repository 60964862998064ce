package broker

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// handlerDoer serves requests with h in process, so that the emulator runs
// inside a synctest bubble; like http.Client, a request whose context
// ended gets the context's error, not the reply.
type handlerDoer struct{ h http.Handler }

func (d handlerDoer) Do(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	d.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.Method, r.URL.Path, err)
	}
	return rec.Result(), nil
}

// TestReapOrphanAfterTimedOutRefresh: a refresh mint times out client-side
// (the emulator's reply latency outlasts MintTimeout) but completes
// upstream, leaving an orphan. The cache lists the profile's keys and
// revokes that one; the key it serves, and an older key with the same
// attributes that clients may still hold, stay active.
func TestReapOrphanAfterTimedOutRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var minted []string
		emu := cwapitest.New(cwapitest.Options{OnMint: func(k cwapitest.Key) {
			mu.Lock()
			minted = append(minted, k.AccessKeyID)
			mu.Unlock()
		}})
		emu.AddAPIToken(apiToken, cwapitest.Identity{Principal: "coreweave/u1", OrgID: orgID})
		client, err := cwapi.NewClient("http://cwapi.test", func(o *cwapi.ClientOptions) { o.HTTPClient = handlerDoer{emu} })
		if err != nil {
			t.Fatal(err)
		}
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(apiToken), 0o600); err != nil {
			t.Fatal(err)
		}
		attrs := cwapi.AuditAttributes("node-a", "train")
		spec := cwapi.MintSpec{Name: "train", Source: cwapi.SourceAccessKey, TokenFile: tokenFile, Duration: time.Hour, Attributes: attrs}
		minter, err := client.Minter(spec)
		if err != nil {
			t.Fatal(err)
		}
		logs := &logLines{}
		cache, err := NewCache([]CacheProfile{{Name: "train", Source: spec.Source, Minter: minter,
			Revoker: client.Revoker(spec), Lister: client.Lister(spec), KeyLifetime: spec.Duration}},
			func(o *CacheOptions) {
				o.Rand = func() float64 { return 0 }
				o.Logger = zerolog.New(logs)
			})
		if err != nil {
			t.Fatal(err)
		}

		// A key a previous daemon on this node minted, clients may hold it.
		older, err := client.CreateAccessKey(t.Context(), apiToken, time.Hour, attrs)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
		ctx := t.Context()
		held, err := cache.Get(ctx, "train")
		if err != nil {
			t.Fatal(err)
		}
		stop := startRun(cache)
		defer stop()

		// The refresh, 40 min after the first key, meets a reply latency.
		emu.SetReplyLatency(time.Minute)
		time.Sleep(40*time.Minute + MintTimeout + time.Second)
		synctest.Wait()

		mu.Lock()
		if len(minted) != 3 {
			t.Fatalf("emulator minted %v, want the older key, the held one and the orphan", minted)
		}
		orphan := minted[2]
		mu.Unlock()
		if st := emu.Stats(); st.Orphaned[cwapitest.EndpointAccessKey] != 1 {
			t.Fatalf("emulator orphaned %v, want 1", st.Orphaned)
		}
		status := func(id string) string { k, _ := emu.Key(id); return k.Status }
		if got := status(orphan); got != cwapitest.StatusDeleted {
			t.Errorf("orphan %s is %s upstream, want revoked", orphan, got)
		}
		if got := status(held.AccessKeyID); got != cwapitest.StatusActive {
			t.Errorf("held key %s is %s upstream, want active", held.AccessKeyID, got)
		}
		if got := status(older.AccessKeyID); got != cwapitest.StatusActive {
			t.Errorf("older key %s is %s upstream, want active: only the timed-out mint's key is an orphan", older.AccessKeyID, got)
		}
		if k, err := cache.Get(ctx, "train"); err != nil || k.AccessKeyID != held.AccessKeyID {
			t.Errorf("after the reap Get = %v, %v; want the held key", k, err)
		}
		lines := logs.events(t, "orphan_revoked")
		if len(lines) != 1 || lines[0]["access_key_id"] != orphan {
			t.Errorf("orphan_revoked lines = %v, want one naming %s", lines, orphan)
		}
		if st := emu.Stats(); st.Requests[cwapitest.EndpointList] != 1 || st.Requests[cwapitest.EndpointRevokeKey] != 1 {
			t.Errorf("emulator requests = %v, want one listing and one revocation", st.Requests)
		}
	})
}

// TestReapOIDCOnlyLogs: an oidc profile cannot list keys; after a timed-out
// mint the cache only logs that an orphan may live until it expires.
func TestReapOIDCOnlyLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &logLines{}
		m := cwapi.MinterFunc(func(ctx context.Context) (*cwapi.Credentials, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		cache, err := NewCache([]CacheProfile{{Name: "wif", Source: cwapi.SourceOIDC, Minter: m, KeyLifetime: time.Hour}},
			func(o *CacheOptions) { o.Logger = zerolog.New(logs) })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cache.Get(t.Context(), "wif"); err == nil {
			t.Fatal("Get succeeded with a minter that always times out")
		}
		lines := logs.events(t, "orphan_possible")
		if len(lines) != 1 || lines[0]["level"] != "warn" || lines[0]["profile"] != "wif" {
			t.Errorf("orphan_possible lines = %v, want one warning", lines)
		}
	})
}
