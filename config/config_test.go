package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// systemVars are the variables outside CWCREDS_* that Load reads, plus the
// unprefixed names a careless envconfig tag would fall back to.
var systemVars = []string{
	envRuntimeDirectory, envXDGRuntimeDir, envCredentialsDirectory,
	"PROFILES", "SOURCE", "TOKEN_FILE", "ORG_ID", "CONFIG_ID", "DURATION", "CLIENT_TOKEN_FILE", "IMDS", "ALLOWED_UIDS", "ALLOWED_GIDS",
	"ALLOW_PODS",
	"LISTEN_ADDR", "API_URL", "LOG_LEVEL", "LOG_FORMAT", "RUNTIME_DIR", "NODE_NAME", "ALLOW_NON_LOOPBACK",
	"ALLOW_INSECURE_FILE_MODES", "KEY_WARMUP", "ENV_FILE",
	"S3_ENDPOINT", "S3_REGION",
	"METRICS_LISTEN_ADDR",
}

// cleanEnv unsets, for the rest of the test, every variable that could
// change what Load sees: the process's own CWCREDS_* variables and the
// systemd ones. t.Setenv records the old value for restoring; Unsetenv then
// makes the variable absent rather than empty.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(strings.ToUpper(k), envPrefix+"_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for _, k := range systemVars {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// load runs Load with exactly env (plus the rest of the process
// environment, cleaned).
func load(t *testing.T, env map[string]string) (*Config, error) {
	t.Helper()
	cleanEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	return Load(os.Environ())
}

// with returns base plus extra; an empty value in extra is still set.
func with(base map[string]string, extra map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(extra))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// workload is a minimal workload-oidc configuration with extra set on top
// (an empty value is set empty, which means unset).
func workload(extra map[string]string) map[string]string {
	return with(map[string]string{
		"CWCREDS_PROFILES":             "pods",
		"CWCREDS_PROFILE_PODS_SOURCE":  "workload-oidc",
		"CWCREDS_PROFILE_PODS_ORG_ID":  "cw1",
		"CWCREDS_PROFILE_PODS_ISSUERS": "https://oidc.example.com/c1",
		"CWCREDS_RUNTIME_DIR":          "/run/cwcreds",
	}, extra)
}

// minimal is the smallest valid configuration.
var minimal = map[string]string{
	"CWCREDS_PROFILES":                 "train",
	"CWCREDS_PROFILE_TRAIN_SOURCE":     "access-key",
	"CWCREDS_PROFILE_TRAIN_TOKEN_FILE": "/etc/cwcreds/train",
}

type wantProblem struct{ v, msg string }

// checkProblems asserts that err is an *Error listing exactly want, in
// order: each with that variable and a message containing msg.
func checkProblems(t *testing.T, err error, want []wantProblem) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Load error = %v (%T), want *Error", err, err)
	}
	if len(e.Problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(e.Problems), len(want), err)
	}
	for i := range min(len(e.Problems), len(want)) {
		got, w := e.Problems[i], want[i]
		if got.Var != w.v || !strings.Contains(got.Msg, w.msg) {
			t.Errorf("problem %d = %s\nwant var %s and a message containing %q", i, got, w.v, w.msg)
		}
	}
}

func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Skipf("os.Hostname: %v", err)
	}
	return h
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := load(t, minimal)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		ListenAddr: "127.0.0.1:791",
		APIURL:     "https://api.coreweave.com",
		LogLevel:   "info",
		LogFormat:  "json",
		RuntimeDir: "/run/cwcreds",
		NodeName:   hostname(t),
		KeyWarmup:  5 * time.Second,

		MaxWorkloadIdentities:    10000,
		UpstreamQPS:              50,
		MaxPendingWorkloadTokens: 16,
		Profiles: []Profile{{
			Name:            "train",
			EnvName:         "TRAIN",
			Source:          "access-key",
			TokenFile:       "/etc/cwcreds/train",
			Duration:        time.Hour,
			ClientTokenFile: "/run/cwcreds/train.token",
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestLoadEveryVariable(t *testing.T) {
	_, err := load(t, map[string]string{
		"CWCREDS_LISTEN_ADDR":                       "[::]:8080",
		"CWCREDS_ALLOW_NON_LOOPBACK":                "true",
		"CWCREDS_API_URL":                           "http://127.0.0.1:9999/api",
		"CWCREDS_LOG_LEVEL":                         "trace",
		"CWCREDS_LOG_FORMAT":                        "console",
		"CWCREDS_RUNTIME_DIR":                       "/var/run//cwcreds/",
		"CWCREDS_NODE_NAME":                         "gpu-node-7",
		"CWCREDS_ALLOW_INSECURE_FILE_MODES":         "true",
		"CWCREDS_KEY_WARMUP":                        "1500ms",
		"CWCREDS_ENV_FILE":                          "/etc/cwcreds/cwcreds.env",
		"CWCREDS_PROFILES":                          " train , fast-eval,,wif,sso,pods ",
		"CWCREDS_MAX_WORKLOAD_IDENTITIES":           "500",
		"CWCREDS_UPSTREAM_QPS":                      "2.5",
		"CWCREDS_MAX_PENDING_WORKLOAD_TOKENS":       "4",
		"CWCREDS_PROFILE_PODS_SOURCE":               "workload-oidc",
		"CWCREDS_PROFILE_PODS_ORG_ID":               "cw123",
		"CWCREDS_PROFILE_PODS_ISSUERS":              "https://oidc.example.com/c1, http://127.0.0.1:8080/oidc",
		"CWCREDS_PROFILE_PODS_AUDIENCE":             "sts.example",
		"CWCREDS_PROFILE_PODS_SHARE":                "identity",
		"CWCREDS_PROFILE_PODS_JWKS_URL":             "https://oidc.example.com/keys",
		"CWCREDS_PROFILE_PODS_DURATION":             "2h",
		"CWCREDS_PROFILE_TRAIN_SOURCE":              "access-key",
		"CWCREDS_PROFILE_TRAIN_TOKEN_FILE":          "/etc/cwcreds/../cwcreds/train",
		"CWCREDS_PROFILE_TRAIN_DURATION":            "12h",
		"CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE":   "/srv/tokens//train",
		"CWCREDS_PROFILE_FAST_EVAL_SOURCE":          "api-token",
		"CWCREDS_PROFILE_FAST_EVAL_TOKEN_FILE":      "/etc/cwcreds/eval",
		"CWCREDS_PROFILE_WIF_SOURCE":                "oidc",
		"CWCREDS_PROFILE_WIF_TOKEN_FILE":            "/var/run/secrets/tokens/cw",
		"CWCREDS_PROFILE_WIF_ORG_ID":                "cw123",
		"CWCREDS_PROFILE_WIF_DURATION":              "1m",
		"CWCREDS_PROFILE_SSO_SOURCE":                "saml",
		"CWCREDS_PROFILE_SSO_TOKEN_FILE":            "/etc/cwcreds/saml",
		"CWCREDS_PROFILE_SSO_ORG_ID":                "cw123",
		"CWCREDS_PROFILE_SSO_CONFIG_ID":             "samlcfg",
		"CWCREDS_PROFILE_SSO_DURATION":              "90m",
		"CWCREDS_PROFILE_SSO_IMDS":                  "true",
		"CWCREDS_PROFILE_TRAIN_IMDS":                "false",
		"CWCREDS_PROFILE_SSO_CLIENT_TOKEN_FILE_X":   "", // unknown, but see below: set empty
		"CWCREDS_PROFILE_FAST_EVAL_CLIENT_TOKEN_FI": "",
	})
	// The two deliberately mistyped names are reported even when empty.
	checkProblems(t, err, []wantProblem{
		{"CWCREDS_PROFILE_FAST_EVAL_CLIENT_TOKEN_FI", "did you mean CWCREDS_PROFILE_FAST_EVAL_CLIENT_TOKEN_FILE?"},
		{"CWCREDS_PROFILE_SSO_CLIENT_TOKEN_FILE_X", "did you mean CWCREDS_PROFILE_SSO_CLIENT_TOKEN_FILE?"},
	})

	os.Unsetenv("CWCREDS_PROFILE_SSO_CLIENT_TOKEN_FILE_X")
	os.Unsetenv("CWCREDS_PROFILE_FAST_EVAL_CLIENT_TOKEN_FI")
	cfg, err := Load(os.Environ())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		ListenAddr:       "[::]:8080",
		APIURL:           "http://127.0.0.1:9999/api",
		LogLevel:         "trace",
		LogFormat:        "console",
		AllowNonLoopback: true,
		RuntimeDir:       "/var/run/cwcreds",
		NodeName:         "gpu-node-7",

		AllowInsecureFileModes: true,
		KeyWarmup:              1500 * time.Millisecond,
		EnvFile:                "/etc/cwcreds/cwcreds.env",
		Profiles: []Profile{
			{Name: "train", EnvName: "TRAIN", Source: "access-key", TokenFile: "/etc/cwcreds/train",
				Duration: 12 * time.Hour, ClientTokenFile: "/srv/tokens/train"},
			{Name: "fast-eval", EnvName: "FAST_EVAL", Source: "api-token", TokenFile: "/etc/cwcreds/eval",
				ClientTokenFile: "/var/run/cwcreds/fast-eval.token"},
			{Name: "wif", EnvName: "WIF", Source: "oidc", TokenFile: "/var/run/secrets/tokens/cw", OrgID: "cw123",
				Duration: time.Minute, ClientTokenFile: "/var/run/cwcreds/wif.token"},
			{Name: "sso", EnvName: "SSO", Source: "saml", TokenFile: "/etc/cwcreds/saml", OrgID: "cw123",
				ConfigID: "samlcfg", Duration: 90 * time.Minute, ClientTokenFile: "/var/run/cwcreds/sso.token", IMDS: true},
			{Name: "pods", EnvName: "PODS", Source: "workload-oidc", OrgID: "cw123", Duration: 2 * time.Hour,
				Issuers: []string{"https://oidc.example.com/c1", "http://127.0.0.1:8080/oidc"}, Audience: "sts.example",
				Share: "identity", JWKSURL: "https://oidc.example.com/keys", AllowPods: true},
		},
		MaxWorkloadIdentities:    500,
		UpstreamQPS:              2.5,
		MaxPendingWorkloadTokens: 4,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load =\n%+v\nwant\n%+v", cfg, want)
	}
	if p, ok := cfg.Profile("fast-eval"); !ok || p.Source != "api-token" {
		t.Errorf(`Profile("fast-eval") = %+v, %v; want the api-token profile`, p, ok)
	}
	if got := cfg.IMDSProfile(); got != "sso" {
		t.Errorf("IMDSProfile() = %q, want sso", got)
	}
	if p, ok := cfg.Profile("nope"); ok {
		t.Errorf(`Profile("nope") = %+v, true; want false`, p)
	}
}

func TestLoadProblems(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []wantProblem
	}{
		// CWCREDS_PROFILES
		{"profiles unset", nil, []wantProblem{{"CWCREDS_PROFILES", "required: list the profiles"}}},
		{"profiles empty items only", map[string]string{"CWCREDS_PROFILES": " , ,"},
			[]wantProblem{{"CWCREDS_PROFILES", "required"}}},
		{"profile name upper case", with(minimal, map[string]string{"CWCREDS_PROFILES": "train,Eval"}),
			[]wantProblem{{"CWCREDS_PROFILES", `profile name "Eval" may contain only lower-case letters, digits and '-'`}}},
		{"profile name underscore", with(minimal, map[string]string{"CWCREDS_PROFILES": "train,a_b"}),
			[]wantProblem{{"CWCREDS_PROFILES", `"a_b" may contain only`}}},
		{"profile name leading dash", with(minimal, map[string]string{"CWCREDS_PROFILES": "-x,train"}),
			[]wantProblem{{"CWCREDS_PROFILES", `"-x" must start and end with a letter or digit`}}},
		{"profile name trailing dash", with(minimal, map[string]string{"CWCREDS_PROFILES": "train,x-"}),
			[]wantProblem{{"CWCREDS_PROFILES", `"x-" must start and end`}}},
		{"profile name too long", with(minimal, map[string]string{"CWCREDS_PROFILES": "train," + strings.Repeat("a", 64)}),
			[]wantProblem{{"CWCREDS_PROFILES", "a 64-character value is longer than 63 characters"}}},
		{"profile name 63 chars", map[string]string{
			"CWCREDS_PROFILES": strings.Repeat("a", 63),
			"CWCREDS_PROFILE_" + strings.Repeat("A", 63) + "_SOURCE":     "access-key",
			"CWCREDS_PROFILE_" + strings.Repeat("A", 63) + "_TOKEN_FILE": "/t",
		}, nil},
		{"duplicate profile", with(minimal, map[string]string{"CWCREDS_PROFILES": "train, train"}),
			[]wantProblem{{"CWCREDS_PROFILES", `profile "train" is listed more than once`}}},
		{"overlapping variable names", map[string]string{
			"CWCREDS_PROFILES":                  "a,a-client",
			"CWCREDS_PROFILE_A_SOURCE":          "access-key",
			"CWCREDS_PROFILE_A_TOKEN_FILE":      "/t/a",
			"CWCREDS_PROFILE_A_CLIENT_SOURCE":   "access-key",
			"CWCREDS_PROFILE_A_CLIENT_DURATION": "2h",
		}, []wantProblem{
			{"CWCREDS_PROFILES", `profiles "a" and "a-client" both read CWCREDS_PROFILE_A_CLIENT_TOKEN_FILE; rename one`},
			{"CWCREDS_PROFILE_A_CLIENT_TOKEN_FILE", "required"},
		}},
		{"invalid profile's variables not reported again", map[string]string{
			"CWCREDS_PROFILES":              "Bad",
			"CWCREDS_PROFILE_BAD_SOURCE":    "oidc",
			"CWCREDS_PROFILE_BAD_LOG_LEVEL": "x",
		}, []wantProblem{
			{"CWCREDS_PROFILES", `"Bad" may contain only`},
			{"CWCREDS_PROFILE_BAD_LOG_LEVEL", `not a setting of profile "bad"`},
		}},

		// SOURCE
		{"source missing", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_SOURCE": ""}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_SOURCE", "required: set it to one of access-key, api-token, oidc, saml"}}},
		{"source unknown", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_SOURCE": "kerberos"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_SOURCE", `"kerberos" is not a source; use one of access-key, api-token, oidc, saml`}}},
		{"source is case-sensitive", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_SOURCE": "OIDC"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_SOURCE", `"OIDC" is not a source`}}},

		// TOKEN_FILE
		{"token file missing", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE": ""}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE", "required: set the path of the profile's upstream credential file"}}},
		{"token file missing with bad source", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_SOURCE": "kerberos", "CWCREDS_PROFILE_TRAIN_TOKEN_FILE": "",
		}), []wantProblem{
			{"CWCREDS_PROFILE_TRAIN_SOURCE", "not a source"},
			{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE", "required"},
		}},
		{"token file relative without credentials directory", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE": "train-token"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE", "is a relative path and $CREDENTIALS_DIRECTORY is not set; use an absolute path, or load the file with systemd LoadCredential="}}},
		{"token file escapes credentials directory", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_TOKEN_FILE": "../etc/passwd", "CREDENTIALS_DIRECTORY": "/run/credentials/cwcreds.service",
		}), []wantProblem{{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE", "leads out of $CREDENTIALS_DIRECTORY"}}},
		{"credentials directory relative", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_TOKEN_FILE": "train", "CREDENTIALS_DIRECTORY": "creds",
		}), []wantProblem{{"CREDENTIALS_DIRECTORY", "is not an absolute path"}}},

		// ORG_ID and CONFIG_ID
		{"oidc needs org id", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_SOURCE": "oidc"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_ORG_ID", `required for source "oidc": set the CoreWeave organization ID`}}},
		{"saml needs org and config id", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_SOURCE": "saml"}),
			[]wantProblem{
				{"CWCREDS_PROFILE_TRAIN_ORG_ID", `required for source "saml"`},
				{"CWCREDS_PROFILE_TRAIN_CONFIG_ID", `required for source "saml": set the ID of the organization's SAML configuration`},
			}},
		{"org id not read by access-key", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_ORG_ID": "cw123"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_ORG_ID", `source "access-key" does not use an organization ID (only oidc, saml and workload-oidc do); remove it`}}},
		{"org id not read by api-token", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_SOURCE": "api-token", "CWCREDS_PROFILE_TRAIN_ORG_ID": "cw123",
		}), []wantProblem{{"CWCREDS_PROFILE_TRAIN_ORG_ID", `source "api-token" does not use an organization ID`}}},
		{"config id not read by oidc", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_SOURCE": "oidc", "CWCREDS_PROFILE_TRAIN_ORG_ID": "cw1", "CWCREDS_PROFILE_TRAIN_CONFIG_ID": "c",
		}), []wantProblem{{"CWCREDS_PROFILE_TRAIN_CONFIG_ID", `source "oidc" does not use a SAML configuration ID (only saml does); remove it`}}},
		{"ids not judged when source unknown", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_SOURCE": "", "CWCREDS_PROFILE_TRAIN_CONFIG_ID": "c",
		}), []wantProblem{{"CWCREDS_PROFILE_TRAIN_SOURCE", "required"}}},

		// DURATION
		{"duration not a duration", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_DURATION": "1 hour"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_DURATION", `"1 hour" is not a duration; use Go syntax such as 90m or 2h`}}},
		{"duration too short", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_DURATION": "59s"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_DURATION", `"59s" is out of range; use 1m to 12h`}}},
		{"duration too long", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_DURATION": "12h0m1s"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_DURATION", "out of range"}}},
		{"duration negative", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_DURATION": "-1h"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_DURATION", "out of range"}}},
		{"duration fractional seconds", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_DURATION": "90.5s"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_DURATION", `"90.5s" is not a whole number of seconds`}}},
		{"duration range is inclusive", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_DURATION": "60s"}), nil},
		{"duration set for api-token", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_SOURCE": "api-token", "CWCREDS_PROFILE_TRAIN_DURATION": "1h",
		}), []wantProblem{{"CWCREDS_PROFILE_TRAIN_DURATION", "api-token keys always live 15 minutes"}}},
		{"duration checked when source unknown", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_SOURCE": "x", "CWCREDS_PROFILE_TRAIN_DURATION": "13h",
		}), []wantProblem{
			{"CWCREDS_PROFILE_TRAIN_SOURCE", "not a source"},
			{"CWCREDS_PROFILE_TRAIN_DURATION", "out of range"},
		}},

		// CLIENT_TOKEN_FILE
		{"client token file relative", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE": "train.token"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE", "is not an absolute path"}}},
		{"client token file shared", with(minimal, map[string]string{
			"CWCREDS_PROFILES":                        "train,eval",
			"CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE": "/run/t/shared",
			"CWCREDS_PROFILE_EVAL_SOURCE":             "api-token",
			"CWCREDS_PROFILE_EVAL_TOKEN_FILE":         "/etc/cwcreds/eval",
			"CWCREDS_PROFILE_EVAL_CLIENT_TOKEN_FILE":  "/run/t/../t/shared",
		}), []wantProblem{{"CWCREDS_PROFILE_EVAL_CLIENT_TOKEN_FILE", `is also profile "train"'s client token file; give each profile its own`}}},
		{"client token file is an upstream token file", with(minimal, map[string]string{
			"CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE": "/etc/cwcreds/train",
		}), []wantProblem{{"CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE", `is the upstream token file of profile "train"`}}},

		// LISTEN_ADDR and ALLOW_NON_LOOPBACK
		{"listen all interfaces v4", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "0.0.0.0:7911"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `"0.0.0.0:7911" listens beyond loopback, where other hosts can reach the daemon; use a loopback address such as 127.0.0.1:7911, or set CWCREDS_ALLOW_NON_LOOPBACK=true`}}},
		{"listen all interfaces v6", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "[::]:7911"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", "beyond loopback"}}},
		{"listen empty host", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": ":7911"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", "beyond loopback"}}},
		{"listen lan address", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "10.1.2.3:80"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", "CWCREDS_ALLOW_NON_LOOPBACK=true"}}},
		{"listen non-loopback allowed", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "0.0.0.0:7911", "CWCREDS_ALLOW_NON_LOOPBACK": "1"}), nil},
		// localhost would bind 127.0.0.1 only while clients try ::1 first:
		// a local user listening on [::1]:7911 would get their tokens.
		{"listen localhost", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "localhost:7911"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", "host localhost names both 127.0.0.1 and ::1, and the daemon would listen on one only: a local user could listen on the other and receive clients' tokens; write 127.0.0.1:7911 (what AWS SDKs accept) or [::1]:7911"}}},
		{"listen old default", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "127.0.0.1:7911"}), nil},
		{"listen v6 loopback", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "[::1]:0"}), nil},
		{"listen mapped loopback", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "[::ffff:127.0.0.2]:65535"}), nil},
		{"listen host name", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "node.example:7911"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `host "node.example" is not an IP address (the daemon does not resolve names)`}}},
		{"listen no port", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "127.0.0.1"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `"127.0.0.1" is not host:port; use e.g. 127.0.0.1:791`}}},
		{"listen named port", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "127.0.0.1:http"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `port "http" is not a number from 0 to 65535`}}},
		{"listen port too big", with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "127.0.0.1:65536"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `port "65536" is not a number`}}},
		{"allow non-loopback false", with(minimal, map[string]string{"CWCREDS_ALLOW_NON_LOOPBACK": "false"}), nil},
		{"allow non-loopback 0", with(minimal, map[string]string{"CWCREDS_ALLOW_NON_LOOPBACK": "0", "CWCREDS_LISTEN_ADDR": "0.0.0.0:1"}),
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", "beyond loopback"}}},
		{"allow non-loopback not a bool", with(minimal, map[string]string{"CWCREDS_ALLOW_NON_LOOPBACK": "yes"}),
			[]wantProblem{{"CWCREDS_ALLOW_NON_LOOPBACK", `"yes" is not a boolean; use true or false (or 1 or 0)`}}},
		{"bools are strict", with(minimal, map[string]string{"CWCREDS_ALLOW_NON_LOOPBACK": "TRUE", "CWCREDS_LISTEN_ADDR": "0.0.0.0:1"}),
			[]wantProblem{
				{"CWCREDS_LISTEN_ADDR", "beyond loopback"},
				{"CWCREDS_ALLOW_NON_LOOPBACK", `"TRUE" is not a boolean`},
			}},

		// API_URL
		{"api url http remote", with(minimal, map[string]string{"CWCREDS_API_URL": "http://api.coreweave.com"}),
			[]wantProblem{{"CWCREDS_API_URL", `plain http to "api.coreweave.com" would send bearer tokens unencrypted; use https (http is allowed only for a loopback host`}}},
		{"api url http loopback", with(minimal, map[string]string{"CWCREDS_API_URL": "http://127.0.0.1:8080/base/"}), nil},
		{"api url http localhost", with(minimal, map[string]string{"CWCREDS_API_URL": "http://localhost:8080"}), nil},
		{"api url scheme", with(minimal, map[string]string{"CWCREDS_API_URL": "ftp://api.coreweave.com"}),
			[]wantProblem{{"CWCREDS_API_URL", `scheme "ftp" is not supported; use https`}}},
		{"api url no scheme", with(minimal, map[string]string{"CWCREDS_API_URL": "api.coreweave.com"}),
			[]wantProblem{{"CWCREDS_API_URL", "is not an absolute URL"}}},
		{"api url opaque", with(minimal, map[string]string{"CWCREDS_API_URL": "https:api.coreweave.com"}),
			[]wantProblem{{"CWCREDS_API_URL", "is not an absolute URL"}}},
		{"api url no host", with(minimal, map[string]string{"CWCREDS_API_URL": "https:///v1"}),
			[]wantProblem{{"CWCREDS_API_URL", "has no host"}}},
		{"api url user info", with(minimal, map[string]string{"CWCREDS_API_URL": "https://me:pw@api.coreweave.com"}),
			[]wantProblem{{"CWCREDS_API_URL", "must not contain user info"}}},
		{"api url query", with(minimal, map[string]string{"CWCREDS_API_URL": "https://api.coreweave.com/?x=1"}),
			[]wantProblem{{"CWCREDS_API_URL", "must not have a query"}}},
		{"api url fragment", with(minimal, map[string]string{"CWCREDS_API_URL": "https://api.coreweave.com/#x"}),
			[]wantProblem{{"CWCREDS_API_URL", "must not have a fragment"}}},
		{"api url invalid", with(minimal, map[string]string{"CWCREDS_API_URL": "https://api .coreweave.com"}),
			[]wantProblem{{"CWCREDS_API_URL", "is not a valid URL"}}},

		// LOG_LEVEL, LOG_FORMAT
		{"log level", with(minimal, map[string]string{"CWCREDS_LOG_LEVEL": "verbose"}),
			[]wantProblem{{"CWCREDS_LOG_LEVEL", `"verbose" is not a log level; use one of trace, debug, info, warn, error`}}},
		{"log level case-sensitive", with(minimal, map[string]string{"CWCREDS_LOG_LEVEL": "INFO"}),
			[]wantProblem{{"CWCREDS_LOG_LEVEL", `"INFO" is not a log level`}}},
		{"log format", with(minimal, map[string]string{"CWCREDS_LOG_FORMAT": "text"}),
			[]wantProblem{{"CWCREDS_LOG_FORMAT", `"text" is not a log format; use one of json, console`}}},

		// RUNTIME_DIR
		{"runtime dir relative", with(minimal, map[string]string{"CWCREDS_RUNTIME_DIR": "run"}),
			[]wantProblem{{"CWCREDS_RUNTIME_DIR", "is not an absolute path"}}},
		{"runtime directory relative", with(minimal, map[string]string{"RUNTIME_DIRECTORY": "run"}),
			[]wantProblem{{"RUNTIME_DIRECTORY", "is not an absolute path; set CWCREDS_RUNTIME_DIR"}}},

		// ALLOW_INSECURE_FILE_MODES
		{"allow insecure modes", with(minimal, map[string]string{"CWCREDS_ALLOW_INSECURE_FILE_MODES": "1"}), nil},
		{"allow insecure modes not a bool", with(minimal, map[string]string{"CWCREDS_ALLOW_INSECURE_FILE_MODES": "yes"}),
			[]wantProblem{{"CWCREDS_ALLOW_INSECURE_FILE_MODES", `"yes" is not a boolean; use true or false (or 1 or 0)`}}},

		// KEY_WARMUP
		{"key warmup zero disables", with(minimal, map[string]string{"CWCREDS_KEY_WARMUP": "0"}), nil},
		{"key warmup max is inclusive", with(minimal, map[string]string{"CWCREDS_KEY_WARMUP": "1m"}), nil},
		{"key warmup sub-second", with(minimal, map[string]string{"CWCREDS_KEY_WARMUP": "250ms"}), nil},
		{"key warmup too long", with(minimal, map[string]string{"CWCREDS_KEY_WARMUP": "61s"}),
			[]wantProblem{{"CWCREDS_KEY_WARMUP", `"61s" is longer than 1m: a new key propagates within seconds`}}},
		{"key warmup negative", with(minimal, map[string]string{"CWCREDS_KEY_WARMUP": "-1s"}),
			[]wantProblem{{"CWCREDS_KEY_WARMUP", `"-1s" is negative; use a duration from 0 (no warm-up) to 1m, such as 5s`}}},
		{"key warmup not a duration", with(minimal, map[string]string{"CWCREDS_KEY_WARMUP": "5"}),
			[]wantProblem{{"CWCREDS_KEY_WARMUP", `"5" is not a duration; use Go syntax such as 5s or 500ms (0 disables warm-up)`}}},

		// workload-oidc and its limits
		{"workload minimal", workload(nil), nil},
		{"workload identity with jwks", workload(map[string]string{"CWCREDS_PROFILE_PODS_SHARE": "identity",
			"CWCREDS_PROFILE_PODS_JWKS_URL": "http://127.0.0.1:9/keys"}), nil},
		{"workload with a token file", workload(map[string]string{"CWCREDS_PROFILE_PODS_TOKEN_FILE": "/etc/cwcreds/t"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_TOKEN_FILE", "holds no upstream credential; remove it"}}},
		{"workload with a relative token file", workload(map[string]string{"CWCREDS_PROFILE_PODS_TOKEN_FILE": "t"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_TOKEN_FILE", "holds no upstream credential; remove it"}}},
		{"workload with a client token file", workload(map[string]string{"CWCREDS_PROFILE_PODS_CLIENT_TOKEN_FILE": "/run/x"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_CLIENT_TOKEN_FILE", "has no client token"}}},
		{"workload with allow pods off", workload(map[string]string{"CWCREDS_PROFILE_PODS_ALLOW_PODS": "false"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_ALLOW_PODS", "always served to pods"}}},
		{"workload restricted with allow pods off", workload(map[string]string{"CWCREDS_PROFILE_PODS_ALLOW_PODS": "0",
			"CWCREDS_PROFILE_PODS_ALLOWED_UIDS": "0"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_ALLOW_PODS", "always served to pods"}}},
		{"workload as the imds role", workload(map[string]string{"CWCREDS_PROFILE_PODS_IMDS": "true"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_IMDS", "cannot be served there"}}},
		{"workload without issuers", workload(map[string]string{"CWCREDS_PROFILE_PODS_ISSUERS": " , "}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_ISSUERS", "required for source workload-oidc"}}},
		{"workload plain http issuer", workload(map[string]string{"CWCREDS_PROFILE_PODS_ISSUERS": "http://oidc.example.com"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_ISSUERS", `issuer "http://oidc.example.com" must be https`}}},
		{"workload issuer not a url", workload(map[string]string{"CWCREDS_PROFILE_PODS_ISSUERS": "cluster-1"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_ISSUERS", `issuer "cluster-1" is not an absolute URL`}}},
		{"workload without org", workload(map[string]string{"CWCREDS_PROFILE_PODS_ORG_ID": ""}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_ORG_ID", `required for source "workload-oidc"`}}},
		{"workload bad share", workload(map[string]string{"CWCREDS_PROFILE_PODS_SHARE": "pod"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_SHARE", `"pod" is not a share mode`}}},
		{"workload jwks without identity", workload(map[string]string{"CWCREDS_PROFILE_PODS_JWKS_URL": "https://k/keys"}),
			[]wantProblem{{"CWCREDS_PROFILE_PODS_JWKS_URL", "only SHARE=identity verifies signatures locally"}}},
		{"workload settings on access-key", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_ISSUERS": "https://x",
			"CWCREDS_PROFILE_TRAIN_SHARE": "token"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_ISSUERS", `only source workload-oidc uses it (this profile's is "access-key")`},
				{"CWCREDS_PROFILE_TRAIN_SHARE", "only source workload-oidc uses it"}}},
		{"max identities zero", with(minimal, map[string]string{"CWCREDS_MAX_WORKLOAD_IDENTITIES": "0"}),
			[]wantProblem{{"CWCREDS_MAX_WORKLOAD_IDENTITIES", `"0" is out of range; use a whole number from 1 to 1000000`}}},
		{"max identities not a number", with(minimal, map[string]string{"CWCREDS_MAX_WORKLOAD_IDENTITIES": "10k"}),
			[]wantProblem{{"CWCREDS_MAX_WORKLOAD_IDENTITIES", `"10k" is not a whole number`}}},
		{"max pending tokens zero", with(minimal, map[string]string{"CWCREDS_MAX_PENDING_WORKLOAD_TOKENS": "0"}),
			[]wantProblem{{"CWCREDS_MAX_PENDING_WORKLOAD_TOKENS", `"0" is out of range; use a whole number from 1 to 10000`}}},
		{"max pending tokens not a number", with(minimal, map[string]string{"CWCREDS_MAX_PENDING_WORKLOAD_TOKENS": "many"}),
			[]wantProblem{{"CWCREDS_MAX_PENDING_WORKLOAD_TOKENS", `"many" is not a whole number`}}},
		{"upstream qps too small", with(minimal, map[string]string{"CWCREDS_UPSTREAM_QPS": "0"}),
			[]wantProblem{{"CWCREDS_UPSTREAM_QPS", `"0" is out of range`}}},
		{"upstream qps not a number", with(minimal, map[string]string{"CWCREDS_UPSTREAM_QPS": "fast"}),
			[]wantProblem{{"CWCREDS_UPSTREAM_QPS", `"fast" is not a number`}}},
		{"upstream qps fraction", with(minimal, map[string]string{"CWCREDS_UPSTREAM_QPS": "0.5"}), nil},
		// S3_ENDPOINT, S3_REGION
		{"s3 check set", with(minimal, map[string]string{"CWCREDS_S3_ENDPOINT": "https://cwobject.com", "CWCREDS_S3_REGION": "US-EAST-04A"}), nil},
		{"s3 check over http", with(minimal, map[string]string{"CWCREDS_S3_ENDPOINT": "http://cwlota.com/", "CWCREDS_S3_REGION": "US-EAST-04A"}), nil},
		{"s3 endpoint without region", with(minimal, map[string]string{"CWCREDS_S3_ENDPOINT": "https://cwobject.com"}),
			[]wantProblem{{"CWCREDS_S3_REGION", "is required with CWCREDS_S3_ENDPOINT; set the region clients sign for, such as US-EAST-04A"}}},
		{"s3 region without endpoint", with(minimal, map[string]string{"CWCREDS_S3_REGION": "US-EAST-04A"}),
			[]wantProblem{{"CWCREDS_S3_ENDPOINT", "is required with CWCREDS_S3_REGION; set the S3 endpoint clients use, such as https://cwobject.com, or unset both"},
				{"CWCREDS_S3_REGION", "has no effect without CWCREDS_S3_ENDPOINT; set both or neither"}}},
		{"s3 endpoint with a path", with(minimal, map[string]string{"CWCREDS_S3_ENDPOINT": "https://cwobject.com/bucket", "CWCREDS_S3_REGION": "r"}),
			[]wantProblem{{"CWCREDS_S3_ENDPOINT", "must not have a path: the check lists buckets at the endpoint's root"}}},
		{"s3 endpoint not a URL", with(minimal, map[string]string{"CWCREDS_S3_ENDPOINT": "cwobject.com", "CWCREDS_S3_REGION": "r"}),
			[]wantProblem{{"CWCREDS_S3_ENDPOINT", "is not an absolute URL; write the scheme and host, such as https://cwobject.com"}}},
		{"s3 region not a name", with(minimal, map[string]string{"CWCREDS_S3_ENDPOINT": "https://cwobject.com", "CWCREDS_S3_REGION": "us east"}),
			[]wantProblem{{"CWCREDS_S3_REGION", `"us east" is not a region name: letters, digits, '-' and '_', at most 64`}}},

		// ENV_FILE
		{"env file relative", with(minimal, map[string]string{"CWCREDS_ENV_FILE": "cwcreds.env"}),
			[]wantProblem{{"CWCREDS_ENV_FILE", "is not an absolute path; use a path starting with /"}}},

		// Typo guard
		{"typo global", with(minimal, map[string]string{"CWCREDS_LOG_LEVL": "debug"}),
			[]wantProblem{{"CWCREDS_LOG_LEVL", "not a cwcreds variable; did you mean CWCREDS_LOG_LEVEL?"}}},
		{"typo far from everything", with(minimal, map[string]string{"CWCREDS_COLOUR": "1"}),
			[]wantProblem{{"CWCREDS_COLOUR", "not a cwcreds variable; remove it or fix its name"}}},
		{"typo wrong case", with(minimal, map[string]string{"cwcreds_log_level": "debug"}),
			[]wantProblem{{"cwcreds_log_level", "variable names are case-sensitive; did you mean CWCREDS_LOG_LEVEL?"}}},
		{"typo profile setting", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_TOKENFILE": "/x"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_TOKENFILE", `not a setting of profile "train"; did you mean CWCREDS_PROFILE_TRAIN_TOKEN_FILE?`}}},
		{"unknown profile setting", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_REGION": "x"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_REGION", `not a setting of profile "train"; a profile's settings are SOURCE, TOKEN_FILE, ORG_ID, CONFIG_ID, DURATION, CLIENT_TOKEN_FILE, IMDS, ALLOWED_UIDS, ALLOWED_GIDS, `}}},
		// IMDS
		{"imds not a boolean", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_IMDS": "yes"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_IMDS", `"yes" is not a boolean; use true or false`}}},
		{"imds on one profile", with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_IMDS": "1"}), nil},
		{"imds on two profiles", with(minimal, map[string]string{
			"CWCREDS_PROFILES":                "train,eval",
			"CWCREDS_PROFILE_EVAL_SOURCE":     "api-token",
			"CWCREDS_PROFILE_EVAL_TOKEN_FILE": "/etc/cwcreds/eval",
			"CWCREDS_PROFILE_TRAIN_IMDS":      "true",
			"CWCREDS_PROFILE_EVAL_IMDS":       "true",
		}), []wantProblem{{"CWCREDS_PROFILE_EVAL_IMDS", `profile "train" already answers as the EC2 instance role; at most one profile may set IMDS=true`}}},
		{"unlisted profile", with(minimal, map[string]string{"CWCREDS_PROFILE_FAST_EVAL_CLIENT_TOKEN_FILE": "/x"}),
			[]wantProblem{{"CWCREDS_PROFILE_FAST_EVAL_CLIENT_TOKEN_FILE", `profile "fast-eval" is not in CWCREDS_PROFILES; add it there, or remove this variable`}}},
		{"unlisted profile near a listed one", with(minimal, map[string]string{"CWCREDS_PROFILE_TRIAN_SOURCE": "oidc"}),
			[]wantProblem{{"CWCREDS_PROFILE_TRIAN_SOURCE", `profile "trian" is not in CWCREDS_PROFILES; add it there, or remove this variable (did you mean CWCREDS_PROFILE_TRAIN_SOURCE?)`}}},
		{"profile prefix alone", with(minimal, map[string]string{"CWCREDS_PROFILE_": "x"}),
			[]wantProblem{{"CWCREDS_PROFILE_", "not a cwcreds variable"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := load(t, tc.env)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if cfg == nil {
					t.Fatal("Load returned a nil Config and no error")
				}
				return
			}
			if cfg != nil {
				t.Errorf("Load returned a Config along with problems")
			}
			checkProblems(t, err, tc.want)
		})
	}
}

func TestLoadReportsEveryProblemInOrder(t *testing.T) {
	_, err := load(t, map[string]string{
		"CWCREDS_PROFILES":                 "train,Bad,eval,train",
		"CWCREDS_LISTEN_ADDR":              "0.0.0.0:7911",
		"CWCREDS_API_URL":                  "http://api.coreweave.com",
		"CWCREDS_LOG_LEVEL":                "loud",
		"CWCREDS_LOG_LEVL":                 "debug",
		"CWCREDS_ZZZ":                      "1",
		"CWCREDS_PROFILE_TRAIN_SOURCE":     "kerberos",
		"CWCREDS_PROFILE_TRAIN_DURATION":   "1d",
		"CWCREDS_PROFILE_TRAIN_TOKENFILE":  "/x",
		"CWCREDS_PROFILE_EVAL_SOURCE":      "saml",
		"CWCREDS_PROFILE_EVAL_TOKEN_FILE":  "eval",
		"CWCREDS_PROFILE_EVAL_DURATION":    "30m",
		"CWCREDS_PROFILE_OTHER_SOURCE":     "oidc",
		"CWCREDS_PROFILE_ANOTHER_DURATION": "1h",
	})
	checkProblems(t, err, []wantProblem{
		{"CWCREDS_PROFILES", `"Bad" may contain only`},
		{"CWCREDS_PROFILES", `"train" is listed more than once`},
		{"CWCREDS_LISTEN_ADDR", "beyond loopback"},
		{"CWCREDS_API_URL", "plain http"},
		{"CWCREDS_LOG_LEVEL", `"loud" is not a log level`},
		{"CWCREDS_LOG_LEVL", "did you mean CWCREDS_LOG_LEVEL?"},
		{"CWCREDS_ZZZ", "not a cwcreds variable"},
		{"CWCREDS_PROFILE_TRAIN_SOURCE", `"kerberos" is not a source`},
		{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE", "required"},
		{"CWCREDS_PROFILE_TRAIN_DURATION", `"1d" is not a duration`},
		{"CWCREDS_PROFILE_TRAIN_TOKENFILE", "did you mean CWCREDS_PROFILE_TRAIN_TOKEN_FILE?"},
		{"CWCREDS_PROFILE_EVAL_TOKEN_FILE", "is a relative path"},
		{"CWCREDS_PROFILE_EVAL_ORG_ID", "required"},
		{"CWCREDS_PROFILE_EVAL_CONFIG_ID", "required"},
		{"CWCREDS_PROFILE_ANOTHER_DURATION", `profile "another" is not in CWCREDS_PROFILES`},
		{"CWCREDS_PROFILE_OTHER_SOURCE", `profile "other" is not in CWCREDS_PROFILES`},
	})
	// The rendering is one "VAR: msg" line per problem.
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 16 || !strings.HasPrefix(lines[0], "CWCREDS_PROFILES: ") || !strings.HasPrefix(lines[15], "CWCREDS_PROFILE_OTHER_SOURCE: ") {
		t.Errorf("Error() =\n%s\nwant 16 lines of VAR: msg in report order", err)
	}
}

func TestLoadResolvesCredentialsDirectory(t *testing.T) {
	const credDir = "/run/credentials/cwcreds.service"
	tests := []struct{ tokenFile, want string }{
		{"api-token", credDir + "/api-token"},
		{"./sub/../api-token", credDir + "/api-token"},
		{"/etc/cwcreds/abs", "/etc/cwcreds/abs"},
	}
	for _, tc := range tests {
		t.Run(tc.tokenFile, func(t *testing.T) {
			cfg, err := load(t, with(minimal, map[string]string{
				"CREDENTIALS_DIRECTORY":            credDir,
				"CWCREDS_PROFILE_TRAIN_TOKEN_FILE": tc.tokenFile,
			}))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := cfg.Profiles[0].TokenFile; got != tc.want {
				t.Errorf("TokenFile = %q, want %q", got, tc.want)
			}
			if cfg.CredentialsDir != credDir {
				t.Errorf("CredentialsDir = %q, want %q", cfg.CredentialsDir, credDir)
			}
		})
	}
}

func TestLoadRuntimeDir(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"fallback", nil, "/run/cwcreds"},
		{"xdg", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/user/1000/cwcreds"},
		{"relative xdg ignored", map[string]string{"XDG_RUNTIME_DIR": "run/user"}, "/run/cwcreds"},
		{"systemd", map[string]string{"RUNTIME_DIRECTORY": "/run/cwcreds-a", "XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/cwcreds-a"},
		{"systemd several", map[string]string{"RUNTIME_DIRECTORY": "/run/one:/run/two"}, "/run/one"},
		{"explicit wins", map[string]string{"CWCREDS_RUNTIME_DIR": "/srv/cw/", "RUNTIME_DIRECTORY": "/run/one"}, "/srv/cw"},
		{"empty means unset", map[string]string{"CWCREDS_RUNTIME_DIR": "", "RUNTIME_DIRECTORY": "/run/one"}, "/run/one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := load(t, with(minimal, tc.env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if cfg.RuntimeDir != tc.want {
				t.Errorf("RuntimeDir = %q, want %q", cfg.RuntimeDir, tc.want)
			}
			if got, want := cfg.Profiles[0].ClientTokenFile, filepath.Join(tc.want, "train.token"); got != want {
				t.Errorf("ClientTokenFile = %q, want %q", got, want)
			}
		})
	}
}

func TestLoadIgnoresUnprefixedVariables(t *testing.T) {
	stray := map[string]string{
		"SOURCE": "oidc", "TOKEN_FILE": "/stray", "ORG_ID": "stray", "CONFIG_ID": "stray", "DURATION": "2h",
		"CLIENT_TOKEN_FILE": "/stray", "PROFILES": "stray", "LISTEN_ADDR": "0.0.0.0:1", "API_URL": "ftp://x",
		"LOG_LEVEL": "bogus", "LOG_FORMAT": "bogus", "RUNTIME_DIR": "/stray", "NODE_NAME": "stray",
		"ALLOW_NON_LOOPBACK": "bogus", "ALLOW_INSECURE_FILE_MODES": "true", "KEY_WARMUP": "1h", "ENV_FILE": "rel",
	}
	cfg, err := load(t, with(minimal, stray))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	p := cfg.Profiles[0]
	if cfg.ListenAddr != defaultListenAddr || cfg.APIURL != defaultAPIURL || cfg.LogLevel != "info" ||
		cfg.RuntimeDir != "/run/cwcreds" || cfg.NodeName == "stray" || len(cfg.Profiles) != 1 ||
		p.Source != "access-key" || p.TokenFile != "/etc/cwcreds/train" || p.Duration != time.Hour ||
		p.OrgID != "" || p.ConfigID != "" || p.ClientTokenFile != "/run/cwcreds/train.token" ||
		cfg.AllowInsecureFileModes || cfg.KeyWarmup != defaultKeyWarmup || cfg.EnvFile != "" {
		t.Errorf("Load read an unprefixed variable: %+v", cfg)
	}

	// A missing prefixed variable is missing, not filled in from SOURCE.
	_, err = load(t, with(stray, map[string]string{"CWCREDS_PROFILES": "train"}))
	checkProblems(t, err, []wantProblem{
		{"CWCREDS_PROFILE_TRAIN_SOURCE", "required"},
		{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE", "required"},
	})
}

func TestLoadEmptyMeansUnset(t *testing.T) {
	cfg, err := load(t, with(minimal, map[string]string{
		"CWCREDS_LISTEN_ADDR": "", "CWCREDS_API_URL": "", "CWCREDS_LOG_LEVEL": "", "CWCREDS_LOG_FORMAT": "",
		"CWCREDS_ALLOW_NON_LOOPBACK": "", "CWCREDS_NODE_NAME": "", "CWCREDS_PROFILE_TRAIN_DURATION": "",
		"CWCREDS_PROFILE_TRAIN_ORG_ID": "", "CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE": "", "CREDENTIALS_DIRECTORY": "",
		"CWCREDS_ALLOW_INSECURE_FILE_MODES": "", "CWCREDS_KEY_WARMUP": "", "CWCREDS_ENV_FILE": "",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.ListenAddr != defaultListenAddr || cfg.LogFormat != "json" || cfg.NodeName != hostname(t) ||
		cfg.Profiles[0].Duration != time.Hour || cfg.Profiles[0].ClientTokenFile != "/run/cwcreds/train.token" ||
		cfg.AllowInsecureFileModes || cfg.KeyWarmup != 5*time.Second || cfg.EnvFile != "" {
		t.Errorf("empty variables did not take their defaults: %+v", cfg)
	}
}

func TestLoadNodeName(t *testing.T) {
	cfg, err := load(t, with(minimal, map[string]string{"CWCREDS_NODE_NAME": "gpu-7"}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.NodeName != "gpu-7" {
		t.Errorf("NodeName = %q, want %q", cfg.NodeName, "gpu-7")
	}
}

func TestLoadKeepsSecretsOutOfMessages(t *testing.T) {
	const secret = "CW-SECRET-0123456789abcdef0123456789abcdef"
	_, err := load(t, map[string]string{
		"CWCREDS_PROFILES":                        "train,eval",
		"CWCREDS_API_URL":                         "https://user:" + secret + "@api.coreweave.com/?token=" + secret,
		"CWCREDS_LOG_LEVEL":                       secret,
		"CWCREDS_PROFILE_TRAIN_SOURCE":            secret,
		"CWCREDS_PROFILE_TRAIN_TOKEN_FILE":        secret, // the token pasted instead of a path
		"CWCREDS_PROFILE_TRAIN_ORG_ID":            secret,
		"CWCREDS_PROFILE_TRAIN_DURATION":          secret,
		"CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE": secret,
		"CWCREDS_PROFILE_EVAL_SOURCE":             "access-key",
		"CWCREDS_PROFILE_EVAL_TOKEN_FILE":         "/t",
		"CWCREDS_PROFILE_EVAL_ORG_ID":             secret,
		"CWCREDS_PROFILE_EVAL_CONFIG_ID":          secret,
		"CWCREDS_TOKEN":                           secret,
		"CWCREDS_KEY_WARMUP":                      secret,
		"CWCREDS_ALLOW_INSECURE_FILE_MODES":       secret,
		"CWCREDS_ENV_FILE":                        secret,
	})
	if err == nil {
		t.Fatal("Load succeeded, want problems")
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("a message quotes a secret value:\n%v", err)
	}
	if n := len(err.(*Error).Problems); n < 12 {
		t.Errorf("got %d problems, want at least 12:\n%v", n, err)
	}
}

func TestValidate(t *testing.T) {
	good := func() *Config {
		return &Config{
			ListenAddr: "127.0.0.1:0",
			APIURL:     "http://127.0.0.1:1234",
			LogLevel:   "info",
			LogFormat:  "console",
			RuntimeDir: "/tmp/cwcreds-demo",
			NodeName:   "node",
			Profiles: []Profile{
				{Name: "demo", EnvName: "DEMO", Source: "access-key", TokenFile: "/tmp/cwcreds-demo/api-token",
					Duration: 20 * time.Minute, ClientTokenFile: "/tmp/cwcreds-demo/demo.token"},
				{Name: "fast", EnvName: "FAST", Source: "api-token", TokenFile: "/tmp/cwcreds-demo/api-token",
					ClientTokenFile: "/tmp/cwcreds-demo/fast.token"},
			},
		}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []wantProblem
	}{
		{"no profiles", func(c *Config) { c.Profiles = nil }, []wantProblem{{"CWCREDS_PROFILES", "required"}}},
		{"bad globals", func(c *Config) {
			c.ListenAddr, c.APIURL, c.LogLevel, c.LogFormat, c.RuntimeDir = "0.0.0.0:1", "http://example.com", "", "x", "rel"
		}, []wantProblem{
			{"CWCREDS_LISTEN_ADDR", "beyond loopback"},
			{"CWCREDS_API_URL", "plain http"},
			{"CWCREDS_LOG_LEVEL", `"" is not a log level`},
			{"CWCREDS_LOG_FORMAT", `"x" is not a log format`},
			{"CWCREDS_RUNTIME_DIR", "absolute"},
		}},
		{"bad profile", func(c *Config) {
			c.Profiles[0] = Profile{Name: "demo", EnvName: "DEMO", Source: "saml", TokenFile: "rel", Duration: 0, ClientTokenFile: "rel"}
		}, []wantProblem{
			{"CWCREDS_PROFILE_DEMO_TOKEN_FILE", "absolute"},
			{"CWCREDS_PROFILE_DEMO_ORG_ID", "required"},
			{"CWCREDS_PROFILE_DEMO_CONFIG_ID", "required"},
			{"CWCREDS_PROFILE_DEMO_DURATION", "0s is out of range"},
			{"CWCREDS_PROFILE_DEMO_CLIENT_TOKEN_FILE", "absolute"},
		}},
		{"api-token with duration", func(c *Config) { c.Profiles[1].Duration = time.Hour },
			[]wantProblem{{"CWCREDS_PROFILE_FAST_DURATION", "15 minutes"}}},
		{"names", func(c *Config) {
			c.Profiles[1].Name, c.Profiles[1].EnvName = "demo", "DEMO"
			c.Profiles = append(c.Profiles, Profile{Name: "x-y", EnvName: "X-Y", Source: "access-key",
				TokenFile: "/t", Duration: time.Hour, ClientTokenFile: "/c"})
		}, []wantProblem{
			{"CWCREDS_PROFILES", `profile "demo" is listed more than once`},
			{"CWCREDS_PROFILES", `profile "x-y" has EnvName "X-Y"; it must be "X_Y"`},
		}},
		{"empty name and paths", func(c *Config) {
			c.RuntimeDir = ""
			c.Profiles[1] = Profile{Source: "api-token", TokenFile: "/t", ClientTokenFile: ""}
		}, []wantProblem{
			{"CWCREDS_PROFILES", "a profile name is empty"},
			{"CWCREDS_RUNTIME_DIR", "is empty; set an absolute path"},
			{"CWCREDS_PROFILE__CLIENT_TOKEN_FILE", "is empty"},
		}},
		{"shared client token", func(c *Config) { c.Profiles[1].ClientTokenFile = c.Profiles[0].ClientTokenFile },
			[]wantProblem{{"CWCREDS_PROFILE_FAST_CLIENT_TOKEN_FILE", `profile "demo"'s client token file`}}},
		{"two imds profiles", func(c *Config) { c.Profiles[0].IMDS, c.Profiles[1].IMDS = true, true },
			[]wantProblem{{"CWCREDS_PROFILE_FAST_IMDS", `profile "demo" already answers as the EC2 instance role`}}},
		{"key warmup out of range", func(c *Config) { c.KeyWarmup = 2 * time.Minute },
			[]wantProblem{{"CWCREDS_KEY_WARMUP", "2m0s is longer than 1m"}}},
		{"key warmup negative", func(c *Config) { c.KeyWarmup = -time.Second },
			[]wantProblem{{"CWCREDS_KEY_WARMUP", "-1s is negative"}}},
		{"env file relative", func(c *Config) { c.EnvFile = "etc/cwcreds.env" },
			[]wantProblem{{"CWCREDS_ENV_FILE", "is not an absolute path"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mutate(c)
			checkProblems(t, c.Validate(), tc.want)
		})
	}
}
