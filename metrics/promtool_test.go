package metrics

import (
	"bytes"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// PromtoolCheck runs `promtool check metrics` on a /metrics body and fails
// t with its complaints. It skips t when promtool is not installed (Debian:
// apt-get install --no-install-recommends prometheus).
func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found in PATH: install it (Debian: apt-get install -y --no-install-recommends prometheus) to lint /metrics")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewBufferString(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestPromtoolCheckMetrics lints every metric the daemon exports, with
// traffic on each: Go and process collectors, requests, cache, mints,
// upstream calls with their histogram, and the per-profile gauges.
func TestPromtoolCheckMetrics(t *testing.T) {
	m, reg := newTestMetrics(t)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp := time.Now().Add(time.Hour)
	if err := m.WatchProfiles(statusFunc(func() []broker.Status {
		return []broker.Status{{Profile: "train", Healthy: true, Expiration: &exp}, {Profile: "ingest"},
			{Profile: "pods", Healthy: true, Workload: &broker.WorkloadStatus{Identities: 2}}}
	}), nil); err != nil {
		t.Fatal(err)
	}
	p := m.Profile("train")
	p.Hit()
	p.StaleHit()
	p.Miss()
	p.MintStarted("refresh")
	p.MintDone(nil)
	p.IdentityEvicted(broker.EvictLRU)
	p.TokenRefused(errors.New("refused"))
	m.UpstreamCall(cwapi.PathAccessKey, "ok", 120*time.Millisecond)
	m.UpstreamCall(cwapi.PathOIDCCreds, "UNAUTHENTICATED", 30*time.Millisecond)
	m.Requests("train").Count(0)
	m.Requests("").Count(2)
	promtoolCheck(t, gatherText(t, reg))
}

type statusFunc func() []broker.Status

func (f statusFunc) Status() []broker.Status { return f() }
