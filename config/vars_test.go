package config

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// envconfigKeys lists the variable names envconfig derives for spec.
func envconfigKeys(t *testing.T, prefix string, spec any) []string {
	t.Helper()
	var b bytes.Buffer
	if err := envconfig.Usagef(prefix, spec, &b, "{{range .}}{{.Key}}\n{{end}}"); err != nil {
		t.Fatalf("envconfig.Usagef: %v", err)
	}
	return strings.Fields(b.String())
}

// TestVarsMatchDecoder proves the documented names are the ones envconfig
// reads, so documentation, typo guard and decoder cannot drift apart.
func TestVarsMatchDecoder(t *testing.T) {
	var got []string
	got = append(got, envconfigKeys(t, envPrefix, &globalEnv{})...)
	got = append(got, envconfigKeys(t, profileVarPrefix+"<NAME>", &profileEnv{})...)
	var want []string
	for _, v := range Vars() {
		want = append(want, v.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("envconfig reads\n%q\nVars documents\n%q", got, want)
	}
	if !slices.Contains(got, "CWCREDS_API_URL") {
		t.Errorf("envconfig does not read CWCREDS_API_URL: %q", got)
	}
}

func TestVarsAreComplete(t *testing.T) {
	for _, v := range Vars() {
		if strings.HasSuffix(v.Name, "_DURATION") {
			if d, err := time.ParseDuration(v.Default); err != nil || d != defaultDuration {
				t.Errorf("%s: documented default %q is not %v", v.Name, v.Default, defaultDuration)
			}
		}
		if v.Name == "" || v.Default == "" || v.Description == "" {
			t.Errorf("VarDoc %+v has an empty field", v)
		}
		if !strings.HasSuffix(v.Description, ".") {
			t.Errorf("%s: description %q is not a sentence", v.Name, v.Description)
		}
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	u := Usage()
	for _, v := range Vars() {
		if !strings.Contains(u, "  "+v.Name+" ") {
			t.Errorf("Usage lacks %s:\n%s", v.Name, u)
		}
	}
	for _, want := range []string{
		"CWCREDS_LISTEN_ADDR (default: 127.0.0.1:791)",
		"CWCREDS_API_URL (default: https://api.coreweave.com)",
		"CWCREDS_PROFILES (required)",
		"CWCREDS_PROFILE_<NAME>_DURATION (default: 1h)",
		"CWCREDS_PROFILE_<NAME>_ORG_ID (required for oidc, saml and workload-oidc)",
		"LoadCredential=",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("Usage lacks %q:\n%s", want, u)
		}
	}
	for i, line := range strings.Split(u, "\n") {
		if len(line) > 80 {
			t.Errorf("Usage line %d is %d characters, want at most 80: %q", i+1, len(line), line)
		}
	}
}

func TestWrap(t *testing.T) {
	tests := []struct {
		s     string
		width int
		want  []string
	}{
		{"", 10, nil},
		{"one two three", 7, []string{"one two", "three"}},
		{"one two three", 13, []string{"one two three"}},
		{"a verylongword b", 4, []string{"a", "verylongword", "b"}},
		{"  spaced   out  ", 20, []string{"spaced out"}},
	}
	for _, tc := range tests {
		if got := wrap(tc.s, tc.width); !slices.Equal(got, tc.want) {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.s, tc.width, got, tc.want)
		}
	}
}
