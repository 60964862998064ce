package config

import (
	"strings"
	"testing"
)

// TestMetricsListenAddr: CWCREDS_METRICS_LISTEN_ADDR takes any IP address
// and port without CWCREDS_ALLOW_NON_LOOPBACK (it serves no credential),
// refuses what is not an IP host:port, and refuses a port the credential
// listeners bind on the same address, naming both variables.
func TestMetricsListenAddr(t *testing.T) {
	const v = "CWCREDS_METRICS_LISTEN_ADDR"
	tests := []struct {
		name   string
		listen string // CWCREDS_LISTEN_ADDR; "" for the default
		addr   string
		want   []wantProblem
	}{
		{"node ip", "", "10.0.0.5:7913", nil},
		{"every interface v4", "", "0.0.0.0:7913", nil},
		{"every interface v6", "", "[::]:7913", nil},
		{"loopback", "", "127.0.0.1:7913", nil},
		{"pod identity address", "", "169.254.170.23:7913", nil},
		{"v6 node ip", "", "[fd00:1::5]:7913", nil},
		{"system-chosen port", "127.0.0.1:0", "127.0.0.1:0", nil},
		{"same port other address", "127.0.0.1:7911", "10.0.0.5:7911", nil},
		{"no port", "", "10.0.0.5", []wantProblem{{v, `"10.0.0.5" is not host:port; use e.g. 10.0.0.5:7913`}}},
		{"named port", "", "10.0.0.5:http", []wantProblem{{v, `port "http" is not a number from 0 to 65535`}}},
		{"port too big", "", "10.0.0.5:65536", []wantProblem{{v, `port "65536" is not a number`}}},
		{"empty host", "", ":7913", []wantProblem{{v, `":7913" has no host; write the address, e.g. 10.0.0.5:7913, or 0.0.0.0:7913`}}},
		{"host name", "", "node.example:7913", []wantProblem{{v, `host "node.example" is not an IP address (the daemon does not resolve names)`}}},
		{"localhost", "", "localhost:7913", []wantProblem{{v, `host "localhost" is not an IP address`}}},
		{"unexpanded kubernetes variable", "", "$(HOST_IP):7913", []wantProblem{{v, `host "$(HOST_IP)" is not an IP address`}}},
		{"clash with the default", "", "127.0.0.1:791",
			[]wantProblem{{v, `"127.0.0.1:791" and CWCREDS_LISTEN_ADDR's "127.0.0.1:791" both bind port 791 on the same address`}}},
		{"clash in a list", "127.0.0.1:7911,169.254.170.23:7911", "169.254.170.23:7911",
			[]wantProblem{{v, `CWCREDS_LISTEN_ADDR's "169.254.170.23:7911" both bind port 7911`}}},
		{"clash mapped", "127.0.0.1:7911", "[::ffff:127.0.0.1]:7911", []wantProblem{{v, "both bind port 7911"}}},
		{"clash metrics every interface", "127.0.0.1:7911", "0.0.0.0:7911", []wantProblem{{v, "both bind port 7911"}}},
		{"clash metrics every interface v6", "127.0.0.1:7911", "[::]:7911", []wantProblem{{v, "both bind port 7911"}}},
		{"clash listen every interface", "0.0.0.0:7911", "10.0.0.5:7911", []wantProblem{{v, "both bind port 7911"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := with(minimal, map[string]string{v: tc.addr})
			if tc.listen != "" {
				env["CWCREDS_LISTEN_ADDR"] = tc.listen
			}
			if strings.HasPrefix(tc.listen, "0.0.0.0") {
				env["CWCREDS_ALLOW_NON_LOOPBACK"] = "true"
			}
			cfg, err := load(t, env)
			if tc.want != nil {
				checkProblems(t, err, tc.want)
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if cfg.MetricsListenAddr != tc.addr {
				t.Errorf("MetricsListenAddr = %q, want %q", cfg.MetricsListenAddr, tc.addr)
			}
		})
	}
}

// TestMetricsListenAddrUnsetIsNone: no metrics listener unless asked, and
// the credential listeners' loopback rule is untouched by it.
func TestMetricsListenAddrUnsetIsNone(t *testing.T) {
	cfg, err := load(t, with(minimal, map[string]string{"CWCREDS_METRICS_LISTEN_ADDR": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsListenAddr != "" {
		t.Errorf("MetricsListenAddr = %q, want none", cfg.MetricsListenAddr)
	}
	_, err = load(t, with(minimal, map[string]string{
		"CWCREDS_METRICS_LISTEN_ADDR": "10.0.0.5:7913",
		"CWCREDS_LISTEN_ADDR":         "127.0.0.1:7911,10.0.0.5:7911",
	}))
	checkProblems(t, err, []wantProblem{{"CWCREDS_LISTEN_ADDR", "CWCREDS_ALLOW_NON_LOOPBACK=true"}})
}

// TestValidateMetricsListenAddr: a Config built in code gets the same
// checks.
func TestValidateMetricsListenAddr(t *testing.T) {
	c := &Config{
		ListenAddr: "127.0.0.1:7911", MetricsListenAddr: "0.0.0.0:7911",
		APIURL: defaultAPIURL, LogLevel: "info", LogFormat: "json", RuntimeDir: "/run/cwcreds", NodeName: "n",
		Profiles: []Profile{{Name: "demo", EnvName: "DEMO", Source: "api-token", TokenFile: "/t", ClientTokenFile: "/c"}},
	}
	checkProblems(t, c.Validate(), []wantProblem{{"CWCREDS_METRICS_LISTEN_ADDR", "CWCREDS_LISTEN_ADDR's"}})
	c.MetricsListenAddr = "0.0.0.0:7913"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
