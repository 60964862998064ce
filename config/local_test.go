package config

import (
	"errors"
	"os"
	"testing"
)

func TestLoadLocal(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Local
		wantVar string // the variable of the expected problem, if any
	}{
		{"defaults without profiles", nil, Local{ListenAddr: defaultListenAddr, RuntimeDir: fallbackRuntimeDir, APIURL: defaultAPIURL}, ""},
		{"daemon environment", map[string]string{
			"CWCREDS_LISTEN_ADDR": "127.0.0.1:8000", "CWCREDS_RUNTIME_DIR": "/run/x", "CWCREDS_API_URL": "http://127.0.0.1:9/api",
			"CWCREDS_PROFILES": "a", "CWCREDS_PROFILE_A_SOURCE": "bogus", "CWCREDS_TYPO": "1",
		}, Local{ListenAddr: "127.0.0.1:8000", RuntimeDir: "/run/x", APIURL: "http://127.0.0.1:9/api"}, ""},
		{"systemd runtime directory", map[string]string{"RUNTIME_DIRECTORY": "/run/cwcreds-a:/run/b"},
			Local{ListenAddr: defaultListenAddr, RuntimeDir: "/run/cwcreds-a", APIURL: defaultAPIURL}, ""},
		{"xdg", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"},
			Local{ListenAddr: defaultListenAddr, RuntimeDir: "/run/user/1000/cwcreds", APIURL: defaultAPIURL}, ""},
		{"relative runtime dir", map[string]string{"CWCREDS_RUNTIME_DIR": "run"}, Local{}, varRuntimeDir},
		{"plain http API", map[string]string{"CWCREDS_API_URL": "http://api.example.com"}, Local{}, varAPIURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range []string{"CWCREDS_LISTEN_ADDR", "CWCREDS_RUNTIME_DIR", "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR", "CWCREDS_API_URL"} {
				t.Setenv(v, "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := LoadLocal(os.Environ())
			if tt.wantVar != "" {
				var ce *Error
				if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Var != tt.wantVar {
					t.Fatalf("LoadLocal(os.Environ()) = %v, %v; want one problem with %s", got, err, tt.wantVar)
				}
				return
			}
			if err != nil || *got != tt.want {
				t.Errorf("LoadLocal(os.Environ()) = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
