package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// reloadBase is a running configuration for the reload tests.
func reloadBase() *Config {
	return &Config{
		ListenAddr: "127.0.0.1:7911",
		APIURL:     "https://api.coreweave.com",
		LogLevel:   "info",
		LogFormat:  "json",
		RuntimeDir: "/run/cwcreds",
		NodeName:   "node-1",
		KeyWarmup:  5 * time.Second,
		EnvFile:    "/etc/cwcreds/cwcreds.env",
		Profiles: []Profile{
			{Name: "train", EnvName: "TRAIN", Source: "access-key", TokenFile: "/etc/cwcreds/api-token",
				Duration: time.Hour, ClientTokenFile: "/run/cwcreds/train.token", IMDS: true},
			{Name: "wif", EnvName: "WIF", Source: "oidc", TokenFile: "/var/run/secrets/token", OrgID: "cw1",
				Duration: time.Hour, ClientTokenFile: "/run/cwcreds/wif.token"},
		},
	}
}

func TestRestartOnly(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"profiles and their settings reload", func(c *Config) {
			c.Profiles[1].OrgID, c.Profiles[1].Duration = "cw2", 2*time.Hour
			c.Profiles[1].ClientTokenFile, c.Profiles[1].AllowedUIDs = "/run/x", []uint32{1000}
			c.Profiles = append(c.Profiles, Profile{Name: "new", EnvName: "NEW", Source: "api-token", TokenFile: "/t"})
		}, nil},
		{"a profile without IMDS removed", func(c *Config) { c.Profiles = c.Profiles[:1] }, nil},
		{"every global", func(c *Config) {
			c.ListenAddr, c.APIURL, c.LogLevel, c.LogFormat = "127.0.0.1:1", "https://other", "debug", "console"
			c.AllowNonLoopback, c.RuntimeDir, c.NodeName = true, "/run/other", "node-2"
			c.AllowInsecureFileModes, c.KeyWarmup, c.EnvFile = true, 0, "/etc/other.env"
		}, []string{
			"CWCREDS_LISTEN_ADDR", "CWCREDS_API_URL", "CWCREDS_LOG_LEVEL", "CWCREDS_LOG_FORMAT",
			"CWCREDS_ALLOW_NON_LOOPBACK", "CWCREDS_RUNTIME_DIR", "CWCREDS_NODE_NAME",
			"CWCREDS_ALLOW_INSECURE_FILE_MODES", "CWCREDS_KEY_WARMUP", "CWCREDS_ENV_FILE",
		}},
		{"IMDS moved to another profile", func(c *Config) { c.Profiles[0].IMDS, c.Profiles[1].IMDS = false, true },
			[]string{"CWCREDS_PROFILE_TRAIN_IMDS", "CWCREDS_PROFILE_WIF_IMDS"}},
		{"IMDS profile removed", func(c *Config) { c.Profiles = c.Profiles[1:] }, []string{"CWCREDS_PROFILE_TRAIN_IMDS"}},
		{"IMDS profile added", func(c *Config) {
			c.Profiles[0].IMDS = false
			c.Profiles = append(c.Profiles, Profile{Name: "fast-eval", EnvName: "FAST_EVAL", IMDS: true})
		}, []string{"CWCREDS_PROFILE_TRAIN_IMDS", "CWCREDS_PROFILE_FAST_EVAL_IMDS"}},
		{"IMDS profile kept while its key settings change", func(c *Config) { c.Profiles[0].Duration = 2 * time.Hour }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := reloadBase()
			tc.mutate(next)
			if got := RestartOnly(reloadBase(), next); !slices.Equal(got, tc.want) {
				t.Errorf("RestartOnly = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRestartOnlyMatchesVars: the variables RestartOnly can name are
// exactly those Vars marks NeedsRestart, and each description says what a
// reload does with it.
func TestRestartOnlyMatchesVars(t *testing.T) {
	var documented []string
	for _, v := range Vars() {
		restart := strings.Contains(v.Description, reloadRestart) ||
			strings.Contains(v.Description, "Reload: needs a restart")
		applied := strings.Contains(v.Description, "Reload: applied")
		if restart == applied {
			t.Errorf("%s: the description must say either \"Reload: applied\" or \"Reload: needs a restart\": %q", v.Name, v.Description)
		}
		if restart != v.NeedsRestart {
			t.Errorf("%s: NeedsRestart = %v but the description says otherwise", v.Name, v.NeedsRestart)
		}
		if v.NeedsRestart {
			documented = append(documented, strings.ReplaceAll(v.Name, "<NAME>", "TRAIN"))
		}
	}
	// Change everything at once: every global, and the IMDS of a profile.
	next := reloadBase()
	next.ListenAddr, next.APIURL, next.LogLevel, next.LogFormat = "127.0.0.1:1", "https://other", "debug", "console"
	next.AllowNonLoopback, next.RuntimeDir, next.NodeName = true, "/run/other", "node-2"
	next.AllowInsecureFileModes, next.KeyWarmup, next.EnvFile = true, 0, "/etc/other.env"
	next.MaxWorkloadIdentities, next.UpstreamQPS, next.MaxPendingWorkloadTokens = 5, 2, 3
	next.S3Endpoint, next.S3Region = "https://s3.other", "OTHER-1"
	next.MetricsListenAddr = "0.0.0.0:7913"
	next.Profiles[0] = Profile{Name: "train", EnvName: "TRAIN", Source: "saml", TokenFile: "/x", OrgID: "o", ConfigID: "c",
		Duration: 2 * time.Hour, ClientTokenFile: "/y", AllowedGIDs: []uint32{1}}
	if got := RestartOnly(reloadBase(), next); !slices.Equal(got, documented) {
		t.Errorf("RestartOnly = %q\nVars marks %q", got, documented)
	}
}

func TestFingerprint(t *testing.T) {
	base := Profile{Name: "train", EnvName: "TRAIN", Source: "saml", TokenFile: "/etc/cwcreds/saml", OrgID: "cw1",
		ConfigID: "cfg", Duration: time.Hour, ClientTokenFile: "/run/cwcreds/train.token"}
	fp := base.Fingerprint()
	if fp != base.Fingerprint() {
		t.Fatal("Fingerprint is not stable")
	}
	same := base
	same.ClientTokenFile, same.AllowedUIDs, same.AllowedGIDs, same.IMDS = "/elsewhere", []uint32{1}, []uint32{2}, true
	if got := same.Fingerprint(); got != fp {
		t.Errorf("who may use the key changed the fingerprint: %q -> %q", fp, got)
	}
	changes := map[string]func(*Profile){
		"source":     func(p *Profile) { p.Source = "oidc" },
		"token file": func(p *Profile) { p.TokenFile = "/etc/cwcreds/other" },
		"org id":     func(p *Profile) { p.OrgID = "cw2" },
		"config id":  func(p *Profile) { p.ConfigID = "cfg2" },
		"duration":   func(p *Profile) { p.Duration = 2 * time.Hour },
		// Fields must not run into each other.
		"org id into config id": func(p *Profile) { p.OrgID, p.ConfigID = "cw1\" config_id=\"cfg", "" },
	}
	for name, change := range changes {
		p := base
		change(&p)
		if got := p.Fingerprint(); got == fp {
			t.Errorf("%s changed but the fingerprint did not: %q", name, got)
		}
	}
	for _, want := range []string{`"saml"`, `"/etc/cwcreds/saml"`, `"cw1"`, `"cfg"`, "3600s"} {
		if !strings.Contains(fp, want) {
			t.Errorf("fingerprint %q lacks %s", fp, want)
		}
	}
}
