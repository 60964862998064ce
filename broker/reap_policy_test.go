package broker

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// TestOrphansWindow: only active keys not held, expiring as a key minted
// during the timed-out mint would (within the slack), are orphans.
func TestOrphansWindow(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	end := start.Add(MintTimeout)
	exp := func(d time.Duration) time.Time { return start.Add(time.Hour + d) }
	keys := []cwapi.KeyInfo{
		{AccessKeyID: "ORPHAN", Status: "ACTIVE", Expires: exp(time.Second)},
		{AccessKeyID: "LATE", Status: "ACCESS_KEY_STATUS_ACTIVE", Expires: exp(MintTimeout + OrphanExpirySlack)},
		{AccessKeyID: "HELD", Status: "ACTIVE", Expires: exp(2 * time.Second)},
		{AccessKeyID: "REVOKED", Status: "DELETED", Expires: exp(3 * time.Second)},
		{AccessKeyID: "EARLIER", Status: "ACTIVE", Expires: exp(-OrphanExpirySlack - time.Second)},
		{AccessKeyID: "NEXT", Status: "ACTIVE", Expires: exp(MintTimeout + OrphanExpirySlack + time.Second)},
		{AccessKeyID: "PERMANENT", Status: "ACTIVE"},
	}
	var got []string
	for _, k := range orphans(keys, func(id string) bool { return id == "HELD" }, start, end, time.Hour) {
		got = append(got, k.AccessKeyID)
	}
	if want := []string{"ORPHAN", "LATE"}; !slices.Equal(got, want) {
		t.Errorf("orphans = %v, want %v", got, want)
	}
}

type listerFunc func(ctx context.Context) ([]cwapi.KeyInfo, error)

func (f listerFunc) ListOwnKeys(ctx context.Context) ([]cwapi.KeyInfo, error) { return f(ctx) }

type recordingRevoker struct{ ids []string }

func (r *recordingRevoker) Revoke(_ context.Context, _, id string) error {
	r.ids = append(r.ids, id)
	return nil
}

// TestReapRefusesTooManyCandidates: more candidates than one mint can
// leave means another daemon mints under this node name: revoke none.
func TestReapRefusesTooManyCandidates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &logLines{}
		rev := &recordingRevoker{}
		var start time.Time
		lister := listerFunc(func(context.Context) ([]cwapi.KeyInfo, error) {
			var out []cwapi.KeyInfo
			for i := range MaxOrphansRevoked + 1 {
				out = append(out, cwapi.KeyInfo{AccessKeyID: string(rune('A' + i)), Status: "ACTIVE", Expires: start.Add(time.Hour + time.Second)})
			}
			return out, nil
		})
		m := cwapi.MinterFunc(func(ctx context.Context) (*cwapi.Credentials, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		c, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m, Revoker: rev, Lister: lister, KeyLifetime: time.Hour}},
			func(o *CacheOptions) { o.Logger = zerolog.New(logs) })
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		if _, err := c.Get(t.Context(), "p"); err == nil {
			t.Fatal("Get succeeded")
		}
		synctest.Wait()
		if len(rev.ids) != 0 {
			t.Errorf("revoked %v, want none", rev.ids)
		}
		if lines := logs.events(t, "orphan_reap_refused"); len(lines) != 1 || lines[0]["level"] != "error" {
			t.Errorf("orphan_reap_refused lines = %v, want one error", lines)
		}
	})
}
