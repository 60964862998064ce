package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/server"
)

// TestProfileGaugesFollowCacheUpdate: the per-profile gauges are read from
// the cache at scrape time, so a profile Update removes disappears from them
// and one it adds appears, while the cumulative counters keep their series.
func TestProfileGaugesFollowCacheUpdate(t *testing.T) {
	m, reg := newTestMetrics(t)
	c, err := broker.NewCache([]broker.CacheProfile{{Name: "old", Minter: &switchMinter{}}},
		func(o *broker.CacheOptions) { o.Observer = m })
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WatchProfiles(c, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(t.Context(), "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update([]broker.CacheProfile{{Name: "new", Minter: &switchMinter{}}}); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cwcreds_profile_healthy 1 when the profile holds a key that may be served now, else 0.
# TYPE cwcreds_profile_healthy gauge
cwcreds_profile_healthy{profile="new"} 0
`), "cwcreds_profile_healthy"); err != nil {
		t.Errorf("after Update: %v", err)
	}
	if n := testutil.ToFloat64(m.mints.WithLabelValues("old", "ok")); n != 1 {
		t.Errorf("the removed profile's mint counter = %v, want 1: counters stay until DeleteProfile", n)
	}
	m.Requests("old").Count(server.OutcomeOK)
	m.DeleteProfile("old")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "profile" && l.GetValue() == "old" {
					t.Errorf("after DeleteProfile: %s still has a series for the removed profile", mf.GetName())
				}
			}
		}
	}
}
