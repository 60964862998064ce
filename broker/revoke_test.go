package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// fakeRevoker records revocations and answers with err after latency.
type fakeRevoker struct {
	mu      sync.Mutex
	latency time.Duration
	err     error
	revoked []string
	tokens  []string
}

func (r *fakeRevoker) Revoke(ctx context.Context, apiToken, id string) error {
	r.mu.Lock()
	latency, err := r.latency, r.err
	r.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens = append(r.tokens, apiToken)
	if err == nil {
		r.revoked = append(r.revoked, id)
	}
	return err
}

func newRevokeCache(t *testing.T, m cwapi.Minter, r cwapi.Revoker) *Cache {
	t.Helper()
	c, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m, Revoker: r}},
		func(o *CacheOptions) { o.Rand = func() float64 { return 0 } })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRevokeReplacesKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, latency: 100 * time.Millisecond}
		r := &fakeRevoker{latency: 100 * time.Millisecond}
		c := newRevokeCache(t, m, r)
		old, err := c.Get(t.Context(), "p")
		if err != nil {
			t.Fatal(err)
		}

		// Clients asking while the revoke runs: before upstream revoked
		// the key they still get it; after, they wait for the new one.
		var during []*cwapi.Credentials
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, at := range []time.Duration{50 * time.Millisecond, 150 * time.Millisecond} {
			wg.Go(func() {
				time.Sleep(at)
				k, err := c.Get(t.Context(), "p")
				if err != nil {
					t.Errorf("Get at %s during revoke: %v", at, err)
				}
				mu.Lock()
				during = append(during, k)
				mu.Unlock()
			})
		}
		rev, err := c.Revoke(t.Context(), "p", "")
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		now, err := c.Get(t.Context(), "p")
		if err != nil {
			t.Fatal(err)
		}
		want := Revocation{Profile: "p", RevokedAccessKeyID: old.AccessKeyID, NewAccessKeyID: now.AccessKeyID, NewExpiration: timePtr(now.Expires)}
		if rev.Profile != want.Profile || rev.RevokedAccessKeyID != want.RevokedAccessKeyID || rev.NewAccessKeyID != want.NewAccessKeyID ||
			!rev.NewExpiration.Equal(*want.NewExpiration) || rev.MintError != "" || rev.AlreadyGone {
			t.Errorf("Revoke = %+v, want %+v", rev, want)
		}
		if now == old || m.count() != 2 {
			t.Errorf("after revoke Get = %v (old %v), mints %d; want a new key from one more mint", now, old, m.count())
		}
		if len(r.revoked) != 1 || r.revoked[0] != old.AccessKeyID || r.tokens[0] != "" {
			t.Errorf("revoked %v with tokens %q, want [%s] with the profile's own token", r.revoked, r.tokens, old.AccessKeyID)
		}
		if len(during) != 2 || during[0] != old || during[1] != now {
			t.Errorf("keys served during the revoke = %v, want [old, new] (old %v, new %v)", during, old, now)
		}
	})
}

func TestRevokeFailures(t *testing.T) {
	refused := &cwapi.APIError{Endpoint: cwapi.PathRevokeByKey, StatusCode: http.StatusForbidden, Code: 7, Message: "permission denied"}
	notFound := &cwapi.APIError{Endpoint: cwapi.PathRevokeByKey, StatusCode: http.StatusNotFound, Code: 5, Message: "access key not found"}
	tests := []struct {
		name       string
		revokeErr  error
		mintErr    error // after the first mint
		noKey      bool
		wantErr    error
		keepsKey   bool
		wantGone   bool
		wantMintOK bool
	}{
		{name: "upstream refuses: key kept", revokeErr: refused, wantErr: refused, keepsKey: true},
		{name: "already gone upstream: replaced", revokeErr: notFound, wantGone: true, wantMintOK: true},
		{name: "re-mint fails", mintErr: errors.New("upstream down")},
		{name: "no key", noKey: true, wantErr: ErrNothingToRevoke},
		{name: "no token for the source", revokeErr: cwapi.ErrRevokeTokenRequired, wantErr: cwapi.ErrRevokeTokenRequired, keepsKey: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := &fakeMinter{lifetime: time.Hour}
				c := newRevokeCache(t, m, &fakeRevoker{err: tt.revokeErr})
				var old *cwapi.Credentials
				if !tt.noKey {
					var err error
					if old, err = c.Get(t.Context(), "p"); err != nil {
						t.Fatal(err)
					}
				}
				m.setErr(tt.mintErr)
				rev, err := c.Revoke(t.Context(), "p", "")
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) || rev != nil {
						t.Fatalf("Revoke = %+v, %v; want error %v", rev, err, tt.wantErr)
					}
				} else if err != nil {
					t.Fatalf("Revoke: %v", err)
				}
				k, getErr := c.Get(t.Context(), "p")
				switch {
				case tt.keepsKey && k != old:
					t.Errorf("after a refused revoke Get = %v, %v; want the old key still served", k, getErr)
				case tt.wantMintOK && (k == nil || k == old || rev.NewAccessKeyID != k.AccessKeyID || rev.AlreadyGone != tt.wantGone):
					t.Errorf("Revoke = %+v; Get = %v, %v; want a new key", rev, k, getErr)
				case tt.mintErr != nil && (rev.MintError == "" || rev.NewAccessKeyID != "" || !errors.Is(getErr, ErrNoValidKey)):
					t.Errorf("Revoke = %+v; Get = %v, %v; want MintError and no key served", rev, k, getErr)
				}
			})
		})
	}
}

func TestRevokeUnknownProfile(t *testing.T) {
	c := newRevokeCache(t, &fakeMinter{lifetime: time.Hour}, &fakeRevoker{})
	if _, err := c.Revoke(t.Context(), "nope", ""); !errors.Is(err, ErrUnknownProfile) {
		t.Errorf("Revoke(nope) = %v, want ErrUnknownProfile", err)
	}
}

// TestRevokeWaitsForMintInFlight: a revoke that arrives during a mint
// revokes the key that mint produced, not the one before.
func TestRevokeWaitsForMintInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, latency: time.Second}
		r := &fakeRevoker{}
		c := newRevokeCache(t, m, r)
		var first *cwapi.Credentials
		done := make(chan struct{})
		go func() {
			first, _ = c.Get(t.Context(), "p")
			close(done)
		}()
		time.Sleep(100 * time.Millisecond) // the cold mint is in flight
		rev, err := c.Revoke(t.Context(), "p", "")
		<-done
		if err != nil || rev.RevokedAccessKeyID != first.AccessKeyID {
			t.Errorf("Revoke = %+v, %v; want it to revoke %s, the key the in-flight mint produced", rev, err, first.AccessKeyID)
		}
	})
}

// TestMintAndRevokeAuditLines: mints and revocations log audit lines with
// the profile, principal, expiry and latency, and never a secret or token.
func TestMintAndRevokeAuditLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs strings.Builder
		var mu sync.Mutex
		w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) })
		m := &fakeMinter{lifetime: time.Hour, latency: 40 * time.Millisecond}
		c, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m, Revoker: &fakeRevoker{}}},
			func(o *CacheOptions) { o.Logger = zerolog.New(w) })
		if err != nil {
			t.Fatal(err)
		}
		k, err := c.Get(t.Context(), "p")
		if err != nil {
			t.Fatal(err)
		}
		const apiToken = "CW-SECRET-revoke-token"
		if _, err := c.Revoke(t.Context(), "p", apiToken); err != nil {
			t.Fatal(err)
		}
		events := map[string]map[string]any{}
		for l := range strings.Lines(logs.String()) {
			var line map[string]any
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
			if line["audit"] == true {
				events[fmt.Sprint(line["event"], "/", line["trigger"])] = line
			}
		}
		first := events["key_minted/request"]
		if first == nil || first["profile"] != "p" || first["principal"] != "coreweave/test" || first["access_key_id"] != k.AccessKeyID ||
			first["expires"] != k.Expires.Format(time.RFC3339) || first["latency_ms"] != 40.0 {
			t.Errorf("first mint line = %v", first)
		}
		if l := events["key_revoked/<nil>"]; l == nil || l["access_key_id"] != k.AccessKeyID {
			t.Errorf("revoke line = %v", l)
		}
		if l := events["key_minted/revoke"]; l == nil || l["previous_access_key_id"] != nil {
			// The revoked key was dropped before the re-mint.
			t.Errorf("re-mint line = %v, want one without a previous key", l)
		}
		for _, secret := range []string{"cwoSECRET", apiToken} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("logs hold %q:\n%s", secret, logs.String())
			}
		}
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestConcurrentRevokesRevokeOneKey: a revoke targets the key served when
// it is called. A second revoke of that key while the first runs (or after)
// revokes nothing more and returns the first one's result; it never kills
// the replacement the first just minted.
func TestConcurrentRevokesRevokeOneKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMinter{lifetime: time.Hour, latency: 100 * time.Millisecond}
		r := &fakeRevoker{latency: 100 * time.Millisecond}
		c := newRevokeCache(t, m, r)
		old := mustGet(t, c, "p")
		var revs [2]*Revocation
		var errs [2]error
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 50 * time.Millisecond)
				revs[i], errs[i] = c.Revoke(t.Context(), "p", "")
			})
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("Revoke errors: %v, %v", errs[0], errs[1])
		}
		if len(r.revoked) != 1 || r.revoked[0] != old.AccessKeyID {
			t.Errorf("revoked upstream %v, want only %s", r.revoked, old.AccessKeyID)
		}
		if *revs[0] != *revs[1] {
			t.Errorf("Revoke results differ: %+v and %+v, want the same", revs[0], revs[1])
		}
		if now := mustGet(t, c, "p"); now.AccessKeyID != revs[0].NewAccessKeyID || m.count() != 2 {
			t.Errorf("after the revokes Get = %v, mints %d; want %s from one more mint", now, m.count(), revs[0].NewAccessKeyID)
		}
	})
}
