package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cwcreds/cwcreds/broker"
)

// TestS3CheckAndReapMetrics: the check's verdicts and the reaps count per
// profile, and a refused newest key shows in cwcreds_key_s3_refused.
func TestS3CheckAndReapMetrics(t *testing.T) {
	m, reg := newTestMetrics(t)
	p := m.Profile("train")
	p.(broker.CheckObserver).KeyChecked("accepted", time.Second)
	p.(broker.CheckObserver).KeyChecked("refused", time.Minute)
	p.(broker.ReapObserver).OrphansReaped("ok", 1)
	p.(broker.ReapObserver).OrphansReaped("refused", 0)
	if err := m.WatchProfiles(statusFunc(func() []broker.Status {
		return []broker.Status{{Profile: "train", Healthy: true, S3Check: "refused", S3ErrorCode: "AccessDenied"},
			{Profile: "eval", Healthy: true, S3Check: "accepted"}}
	}), nil); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cwcreds_key_s3_refused 1 when the S3 check (CWCREDS_S3_ENDPOINT) found that S3 refuses the profile's newest key, else 0.
# TYPE cwcreds_key_s3_refused gauge
cwcreds_key_s3_refused{profile="eval"} 0
cwcreds_key_s3_refused{profile="train"} 1
# HELP cwcreds_orphan_keys_revoked_total Keys a timed-out mint left upstream that the daemon revoked, by profile.
# TYPE cwcreds_orphan_keys_revoked_total counter
cwcreds_orphan_keys_revoked_total{profile="train"} 1
`), "cwcreds_key_s3_refused", "cwcreds_orphan_keys_revoked_total"); err != nil {
		t.Error(err)
	}
	for _, tc := range []struct {
		got  float64
		want float64
		what string
	}{
		{testutil.ToFloat64(m.keyChecks.WithLabelValues("train", "accepted")), 1, "accepted checks"},
		{testutil.ToFloat64(m.keyChecks.WithLabelValues("train", "refused")), 1, "refused checks"},
		{testutil.ToFloat64(m.orphanReaps.WithLabelValues("train", "ok")), 1, "ok reaps"},
		{testutil.ToFloat64(m.orphanReaps.WithLabelValues("train", "refused")), 1, "refused reaps"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	m.DeleteProfile("train")
	if n := testutil.CollectAndCount(m.keyChecks) + testutil.CollectAndCount(m.orphanReaps); n != 0 {
		t.Errorf("%d series left after DeleteProfile", n)
	}
}
