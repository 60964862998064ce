package config

import (
	"slices"
	"testing"
)

// Several listeners (issue 15): the pod identity addresses need no
// CWCREDS_ALLOW_NON_LOOPBACK, every other address beyond loopback still
// does, and a list that cannot be bound as written is refused.
func TestLoadListenAddrList(t *testing.T) {
	tests := []struct {
		name, list, allow string
		want              []wantProblem
	}{
		{"loopback and both pod addresses", "127.0.0.1:7911, 169.254.170.23:7911,[fd00:ec2::23]:7911", "", nil},
		{"ecs address", "127.0.0.1:7911,169.254.170.2:7911", "", nil},
		{"pod address alone", "169.254.170.23:80", "", nil},
		{"other link-local needs the opt-in", "127.0.0.1:7911,169.254.170.24:7911", "",
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `"169.254.170.24:7911" listens beyond loopback`}}},
		{"node address needs the opt-in", "127.0.0.1:7911,10.0.0.5:7911", "",
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", "CWCREDS_ALLOW_NON_LOOPBACK=true"}}},
		{"node address with the opt-in", "127.0.0.1:7911,10.0.0.5:7911", "true", nil},
		{"listed twice", "127.0.0.1:7911,169.254.170.23:7911,127.0.0.1:7911", "",
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `"127.0.0.1:7911" is listed twice; list each address once`}}},
		{"mapped form listed twice", "169.254.170.23:7911,[::ffff:169.254.170.23]:7911", "",
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", "is listed twice"}}},
		{"every interface overlaps", "0.0.0.0:7911,127.0.0.1:7911", "true",
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `"127.0.0.1:7911" and an every-interface address share port 7911`}}},
		{"port 0 twice is fine", "127.0.0.1:0,[::1]:0,127.0.0.1:0", "", nil},
		{"only commas", " , ,", "", []wantProblem{{"CWCREDS_LISTEN_ADDR", "lists no address"}}},
		{"every bad item reported", "localhost:1,127.0.0.1", "",
			[]wantProblem{{"CWCREDS_LISTEN_ADDR", `host localhost names both 127.0.0.1 and ::1`}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": tc.list, "CWCREDS_ALLOW_NON_LOOPBACK": tc.allow})
			cfg, err := load(t, env)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if cfg != nil {
				t.Error("Load returned a Config along with problems")
			}
			checkProblems(t, err, tc.want)
		})
	}
}

func TestLoadListenAddrListEveryProblem(t *testing.T) {
	_, err := load(t, with(minimal, map[string]string{"CWCREDS_LISTEN_ADDR": "localhost:1,127.0.0.1"}))
	checkProblems(t, err, []wantProblem{{"CWCREDS_LISTEN_ADDR",
		`; "127.0.0.1" is not host:port`}})
}

func TestListenAddrs(t *testing.T) {
	c := &Config{ListenAddr: "169.254.170.23:7911, 127.0.0.1:7911,[fd00:ec2::23]:7911"}
	if got, want := c.ListenAddrs(), []string{"169.254.170.23:7911", "127.0.0.1:7911", "[fd00:ec2::23]:7911"}; !slices.Equal(got, want) {
		t.Errorf("ListenAddrs = %q, want %q", got, want)
	}
	if got := c.LocalAddr(); got != "127.0.0.1:7911" {
		t.Errorf("LocalAddr = %q, want the loopback one", got)
	}
	if got := (&Config{ListenAddr: "169.254.170.23:7911"}).LocalAddr(); got != "169.254.170.23:7911" {
		t.Errorf("LocalAddr without loopback = %q, want the first", got)
	}
	cleanEnv(t)
	l, err := LoadLocal([]string{"CWCREDS_LISTEN_ADDR=169.254.170.23:7911,[::1]:7911"})
	if err != nil {
		t.Fatal(err)
	}
	if l.ListenAddr != "[::1]:7911" {
		t.Errorf("LoadLocal ListenAddr = %q, want [::1]:7911", l.ListenAddr)
	}
}

// ALLOW_PODS: an opt-in for operator profiles, never with a local-user
// restriction.
func TestLoadAllowPods(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		pods bool
		want []wantProblem
	}{
		{"default off", nil, false, nil},
		{"opt in", map[string]string{"CWCREDS_PROFILE_TRAIN_ALLOW_PODS": "true"}, true, nil},
		{"explicit off", map[string]string{"CWCREDS_PROFILE_TRAIN_ALLOW_PODS": "0"}, false, nil},
		{"not a boolean", map[string]string{"CWCREDS_PROFILE_TRAIN_ALLOW_PODS": "yes"}, false,
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_ALLOW_PODS", `"yes" is not a boolean`}}},
		{"with allowed uids", map[string]string{"CWCREDS_PROFILE_TRAIN_ALLOW_PODS": "1", "CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS": "0"}, false,
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_ALLOW_PODS", "never served to pods"}}},
		{"with allowed gids", map[string]string{"CWCREDS_PROFILE_TRAIN_ALLOW_PODS": "true", "CWCREDS_PROFILE_TRAIN_ALLOWED_GIDS": "0"}, false,
			[]wantProblem{{"CWCREDS_PROFILE_TRAIN_ALLOW_PODS", "remove ALLOW_PODS, or the restriction"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := load(t, with(minimal, tc.env))
			if tc.want != nil {
				checkProblems(t, err, tc.want)
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := cfg.Profiles[0].AllowPods; got != tc.pods {
				t.Errorf("AllowPods = %v, want %v", got, tc.pods)
			}
		})
	}
}

// A workload-oidc profile is served to pods without ALLOW_PODS, refuses
// ALLOW_PODS=false, and a restricted one is not served to pods.
func TestLoadAllowPodsWorkload(t *testing.T) {
	restricted := Profile{Source: sourceWorkload, AllowedUIDs: []uint32{0}}
	for _, tc := range []struct {
		name string
		p    Profile
		val  string
		want bool
		bad  bool
	}{
		{"workload default", Profile{Source: sourceWorkload}, "", true, false},
		{"workload true", Profile{Source: sourceWorkload}, "true", true, false},
		{"workload false", Profile{Source: sourceWorkload}, "false", false, true},
		{"workload restricted", restricted, "", false, false},
		{"operator default", Profile{Source: sourceAPIToken}, "", false, false},
	} {
		// Load parses the value, then validate checks it.
		var ps problems
		got := loadAllowPods(&ps, "V", tc.p, tc.val)
		tc.p.AllowPods = got
		checkAllowPods(&ps, "V", tc.p)
		if got != tc.want && !tc.bad {
			t.Errorf("%s: AllowPods = %v, want %v", tc.name, got, tc.want)
		}
		if (len(ps.list) > 0) != tc.bad {
			t.Errorf("%s: problems %v, want bad=%v", tc.name, ps.list, tc.bad)
		}
	}
	// Validate refuses a built Config combining both.
	c := &Config{ListenAddr: "127.0.0.1:1", APIURL: defaultAPIURL, LogLevel: "info", LogFormat: "json", RuntimeDir: "/run/x",
		Profiles: []Profile{{Name: "t", EnvName: "T", Source: sourceAPIToken, TokenFile: "/t", ClientTokenFile: "/c",
			AllowedUIDs: []uint32{1}, AllowPods: true}}}
	checkProblems(t, c.Validate(), []wantProblem{{"CWCREDS_PROFILE_T_ALLOW_PODS", "never served to pods"}})
}
