package broker

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

const (
	apiToken = cwapitest.FixtureAPIToken
	orgID    = cwapitest.FixtureOrgID
	audience = cwapitest.DefaultAudience
)

// newEmulated returns a client talking to a fresh emulator over loopback
// (cwapitest.StartFixture).
func newEmulated(t *testing.T) (*cwapi.Client, *cwapitest.Emulator) {
	t.Helper()
	emu, url := cwapitest.StartFixture(t)
	c, err := cwapi.NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	return c, emu
}

// TestCacheAgainstEmulatorHerd: many concurrent cold requests through the
// real client and a 200 ms upstream cause exactly one mint.
func TestCacheAgainstEmulatorHerd(t *testing.T) {
	c, emu := newEmulated(t)
	emu.SetLatency(200 * time.Millisecond)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(apiToken), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := c.Minter(cwapi.MintSpec{Name: "p", Source: cwapi.SourceAccessKey, TokenFile: tokenFile, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := cache.Get(t.Context(), "p")
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st := emu.Stats()
	if st.Mints[cwapitest.EndpointAccessKey] != 1 || st.MaxInFlight != 1 {
		t.Errorf("emulator saw %d mints, %d at once; want 1 and 1", st.Mints[cwapitest.EndpointAccessKey], st.MaxInFlight)
	}
}

// TestCacheRevokeAgainstEmulator revokes through the real client: the old
// key is DELETED upstream and a new active one is served. An oidc profile
// needs an API access token to revoke with.
func TestCacheRevokeAgainstEmulator(t *testing.T) {
	c, emu := newEmulated(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	profiles := []cwapi.MintSpec{
		{Name: "ak", Source: cwapi.SourceAccessKey, TokenFile: write("api", apiToken+"\n"), Duration: time.Hour},
		{Name: "wif", Source: cwapi.SourceOIDC, OrgID: orgID, Duration: time.Hour,
			TokenFile: write("jwt", emu.Issuer().Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer"}))},
	}
	var cps []CacheProfile
	for _, p := range profiles {
		m, err := c.Minter(p)
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, CacheProfile{Name: p.Name, Source: p.Source, Minter: m, Revoker: c.Revoker(p)})
	}
	cache, err := NewCache(cps)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	status := func(id string) string {
		k, ok := emu.Key(id)
		if !ok {
			return "unknown"
		}
		return k.Status
	}

	for _, tc := range []struct{ profile, token string }{{"ak", ""}, {"wif", apiToken}} {
		t.Run(tc.profile, func(t *testing.T) {
			old, err := cache.Get(ctx, tc.profile)
			if err != nil {
				t.Fatal(err)
			}
			rev, err := cache.Revoke(ctx, tc.profile, tc.token)
			if err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			now, err := cache.Get(ctx, tc.profile)
			if err != nil {
				t.Fatal(err)
			}
			if rev.RevokedAccessKeyID != old.AccessKeyID || rev.NewAccessKeyID != now.AccessKeyID || now.AccessKeyID == old.AccessKeyID {
				t.Errorf("Revoke = %+v; old %s, now serving %s", rev, old.AccessKeyID, now.AccessKeyID)
			}
			if got := status(old.AccessKeyID); got != cwapitest.StatusDeleted {
				t.Errorf("old key status upstream = %s, want %s", got, cwapitest.StatusDeleted)
			}
			if got := status(now.AccessKeyID); got != cwapitest.StatusActive {
				t.Errorf("new key status upstream = %s, want %s", got, cwapitest.StatusActive)
			}
		})
	}

	t.Run("oidc without a token", func(t *testing.T) {
		old, err := cache.Get(ctx, "wif")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cache.Revoke(ctx, "wif", ""); !errors.Is(err, cwapi.ErrRevokeTokenRequired) {
			t.Errorf("Revoke(wif, no token) = %v, want ErrRevokeTokenRequired", err)
		}
		if k, err := cache.Get(ctx, "wif"); err != nil || k != old || status(old.AccessKeyID) != cwapitest.StatusActive {
			t.Errorf("after a refused revoke: Get = %v, %v, upstream %s; want the same active key", k, err, status(old.AccessKeyID))
		}
	})
	t.Run("token without permission", func(t *testing.T) {
		old, _ := cache.Get(ctx, "ak")
		var api *cwapi.APIError
		if _, err := cache.Revoke(ctx, "ak", cwapitest.FixtureDeniedAPIToken); !errors.As(err, &api) || api.StatusCode != 403 {
			t.Errorf("Revoke with a denied token = %v, want a 403 APIError", err)
		}
		if k, _ := cache.Get(ctx, "ak"); k != old {
			t.Errorf("key replaced although upstream refused the revocation")
		}
	})
}
