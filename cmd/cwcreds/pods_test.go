package main

import (
	"testing"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/config"
)

// accessOf hands the server who may use each profile from a pod: the
// profiles Load marked AllowPods (ALLOW_PODS, workload-oidc), never a
// restricted one, and nothing for the rest.
func TestAccessOfPods(t *testing.T) {
	cfg := &config.Config{Profiles: []config.Profile{
		{Name: "open", Source: "access-key"},
		{Name: "pods", Source: "access-key", AllowPods: true},
		{Name: "work", Source: "workload-oidc", AllowPods: true},
		{Name: "uids", Source: "access-key", AllowedUIDs: []uint32{1000}},
	}}
	a := accessOf(cfg, zerolog.Nop())
	if _, ok := a["open"]; ok || len(a) != 3 {
		t.Fatalf("accessOf = %v, want entries for pods, work and uids only", a)
	}
	if !a["pods"].Pods || !a["work"].Pods || a["uids"].Pods {
		t.Errorf("accessOf = %v: want Pods for pods and work, not for uids", a)
	}
	if anyRestricted(&config.Config{Profiles: cfg.Profiles[:3]}) || !anyRestricted(cfg) {
		t.Error("anyRestricted must count only ALLOWED_UIDS/ALLOWED_GIDS profiles")
	}
}
