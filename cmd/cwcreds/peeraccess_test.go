package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/config"
)

// serve wires ALLOWED_UIDS end to end: this process's uid gets its
// profile, another uid's profile is refused even with the right token, and
// the audit line carries the peer's uid. (peer's tests run clients as other
// users.)
func TestServeRestrictsProfilesByUID(t *testing.T) {
	dir := t.TempDir()
	apiURL, tokenFile, apiToken := apiTokenUpstream(t, dir, nil)
	me := uint32(os.Getuid())
	profile := func(name string, uids ...uint32) config.Profile {
		return config.Profile{Name: name, EnvName: strings.ToUpper(name), Source: "access-key", TokenFile: tokenFile,
			Duration: time.Hour, ClientTokenFile: filepath.Join(dir, name+".token"), AllowedUIDs: uids}
	}
	cfg := &config.Config{ListenAddr: "127.0.0.1:0", APIURL: apiURL, LogLevel: "debug", LogFormat: "json",
		RuntimeDir: dir, NodeName: "gpu-node-7",
		Profiles: []config.Profile{profile("mine", me), profile("theirs", me+1), profile("open")}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	var addr string
	var tokens map[string]string
	go func() {
		done <- serve(ctx, cfg, logs, func(a net.Addr, tok map[string]string) { addr, tokens = a.String(), tok; close(ready) })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	defer func() { cancel(); <-done }()

	d := &daemon{addr: addr}
	for _, tc := range []struct {
		profile string
		status  int
	}{{"mine", 200}, {"theirs", 403}, {"open", 200}} {
		status, body := d.get(t, tc.profile, tokens[tc.profile])
		if status != tc.status {
			t.Errorf("GET %s: %d %v, want %d", tc.profile, status, body, tc.status)
		}
		if tc.status == 403 && body["code"] != "Forbidden" {
			t.Errorf("GET %s: body %v, want code Forbidden", tc.profile, body)
		}
	}
	l := logs.String()
	if !strings.Contains(l, `"profile":"theirs","outcome":"forbidden","peer":`) ||
		!strings.Contains(l, fmt.Sprintf(`"peer_uid":%d`, me)) {
		t.Errorf("logs lack the forbidden audit line with the peer's uid:\n%s", l)
	}
	if strings.Contains(l, apiToken) || strings.Contains(l, tokens["theirs"]) {
		t.Error("a token leaked into the logs")
	}
}

// Without ALLOWED_UIDS/GIDS there is nothing to restrict.
func TestAccessOfRestrictedProfilesOnly(t *testing.T) {
	cfg := &config.Config{Profiles: []config.Profile{{Name: "a"}, {Name: "b"}}}
	if a := accessOf(cfg, zerolog.Nop()); a != nil {
		t.Errorf("unrestricted config: access = %+v, want nil", a)
	}
	cfg.Profiles[1].AllowedGIDs = []uint32{5}
	if a := accessOf(cfg, zerolog.Nop()); len(a) != 1 || len(a["b"].GIDs) != 1 || a["b"].GIDs[0] != 5 {
		t.Errorf("restricted config: access = %+v", a)
	}
}
