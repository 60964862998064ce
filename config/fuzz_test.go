package config

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// fuzzVars are the variables FuzzLoad sets, in the order of its string
// arguments after CWCREDS_PROFILES: the globals, then profile "train"'s.
var fuzzVars = []string{
	"CWCREDS_LISTEN_ADDR", "CWCREDS_API_URL", "CWCREDS_LOG_LEVEL", "CWCREDS_ALLOW_NON_LOOPBACK",
	"CWCREDS_RUNTIME_DIR", "CWCREDS_NODE_NAME",
	"CWCREDS_PROFILE_TRAIN_SOURCE", "CWCREDS_PROFILE_TRAIN_TOKEN_FILE", "CWCREDS_PROFILE_TRAIN_ORG_ID",
	"CWCREDS_PROFILE_TRAIN_CONFIG_ID", "CWCREDS_PROFILE_TRAIN_DURATION",
	"CWCREDS_PROFILE_TRAIN_CLIENT_TOKEN_FILE", "CWCREDS_PROFILE_TRAIN_IMDS",
}

// fuzzLongSecret is 40 characters, so its seeds check that a long value is
// described, never quoted.
const fuzzLongSecret = "cwtok-0123456789abcdef0123456789abcdef01"

// FuzzLoad runs Load on fuzzed values of a fixed set of variables: no
// panic, either a Config or an *Error with problems, and no problem quotes
// a value longer than maxShown characters (a long value may be a secret
// pasted into the wrong variable).
func FuzzLoad(f *testing.F) {
	add := func(profiles string, vals ...string) {
		v := make([]string, len(fuzzVars))
		copy(v, vals)
		f.Add(profiles, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12])
	}
	add("train", "127.0.0.1:7911", "https://api.coreweave.com", "info", "false", "/run/cwcreds", "node-1",
		"access-key", "/etc/cwcreds/api-token", "", "", "2h", "", "true")
	add("train,eval", "", "", "", "", "", "", "saml", "api-token", "cw1", "cfg", "30m")
	add("train", fuzzLongSecret, fuzzLongSecret, fuzzLongSecret, fuzzLongSecret, fuzzLongSecret, fuzzLongSecret,
		fuzzLongSecret, fuzzLongSecret, fuzzLongSecret, fuzzLongSecret, fuzzLongSecret, fuzzLongSecret, fuzzLongSecret)
	add(fuzzLongSecret+",train,"+fuzzLongSecret, "0.0.0.0:80", "http://evil.example/", "TRACE", "yes", "run", "",
		"api-token", "../token", "x", "y", "1ns", "rel", "2")
	add("-"+strings.Repeat("a", 40)+"-,train,train", "[::1]:99999", "https://u:p@h/?q#f", "", "", "", "",
		"oidc", "", "", "", "9999999999999999999h", "", "")

	f.Fuzz(func(t *testing.T, profiles, listen, apiURL, level, allow, runtimeDir, node,
		source, tokenFile, orgID, configID, duration, clientTokenFile, imds string) {
		vals := []string{listen, apiURL, level, allow, runtimeDir, node,
			source, tokenFile, orgID, configID, duration, clientTokenFile, imds}
		for _, v := range append(vals, profiles) {
			if strings.IndexByte(v, 0) >= 0 {
				t.Skip("the environment cannot hold NUL")
			}
		}
		cleanEnv(t)
		t.Setenv("CWCREDS_PROFILES", profiles)
		for i, k := range fuzzVars {
			t.Setenv(k, vals[i])
		}
		c, err := Load(os.Environ())
		if err == nil {
			if c == nil || len(c.Profiles) == 0 {
				t.Fatalf("Load = %+v, nil: want profiles", c)
			}
			return
		}
		var cerr *Error
		if !errors.As(err, &cerr) {
			return // envconfig itself failed to decode: no problem list
		}
		if len(cerr.Problems) == 0 {
			t.Fatal("*Error without problems")
		}
		// A message must never hold a long value, raw or quoted, nor quote
		// a long profile name (a name may appear raw, upper-cased, inside
		// a variable name, as the variable names of that profile do).
		var long, quotedOnly []string
		for _, v := range vals {
			if len(v) > maxShown {
				long = append(long, v)
			}
		}
		for _, item := range append(strings.Split(profiles, ","), profiles) {
			if len(item) > maxShown {
				quotedOnly = append(quotedOnly, item, strings.TrimSpace(item))
			}
		}
		for _, p := range cerr.Problems {
			if strings.ContainsAny(p.Msg, "\r\n") {
				t.Errorf("%s: message holds a line break: %q", p.Var, p.Msg)
			}
			for _, v := range long {
				if strings.Contains(p.Msg, v) || strings.Contains(p.Msg, strconv.Quote(v)) {
					t.Errorf("%s: message holds a %d-character value: %q", p.Var, len(v), p.Msg)
				}
			}
			for _, v := range quotedOnly {
				if len(v) > maxShown && strings.Contains(p.Msg, strconv.Quote(v)) {
					t.Errorf("%s: message quotes a %d-character profile name: %q", p.Var, len(v), p.Msg)
				}
			}
		}
	})
}

// FuzzEnvFile runs the environment file parser on fuzzed content: no
// panic; on success only valid CWCREDS_ names, each once, and values that
// survive a round trip through double quotes; on failure one
// "path:line: reason" per malformed line, and never a value longer than
// maxShown (it may be a secret).
func FuzzEnvFile(f *testing.F) {
	f.Add("CWCREDS_PROFILES=train\nCWCREDS_PROFILE_TRAIN_TOKEN_FILE='/etc/cw creds/t'\n")
	f.Add("# c\n; c\n  CWCREDS_LOG_LEVEL = \"de\\\"bug\"\r\nCWCREDS_LOG_LEVEL=info")
	f.Add("export CWCREDS_X=1\nCWCREDS_ENV_FILE=/x\nHOME=/root\n=v\nnovalue\n")
	f.Add("CWCREDS_PROFILE_A_TOKEN_FILE=\"" + fuzzLongSecret + "\\n\"\nCWCREDS_B='" + fuzzLongSecret + "\n")
	f.Add("CWCREDS_A=" + fuzzLongSecret + " # comment\nCWCREDS_B=" + fuzzLongSecret + "\\\nCWCREDS_C=a\"" + fuzzLongSecret)

	const path = "/etc/cwcreds/cwcreds.env"
	f.Fuzz(func(t *testing.T, content string) {
		vars, err := parseEnvFile(path, content)
		if err == nil {
			seen := make(map[string]bool)
			var quoted strings.Builder
			for _, v := range vars {
				if !isEnvName(v.Name) || !strings.HasPrefix(strings.ToUpper(v.Name), envPrefix+"_") || v.Name == varEnvFile {
					t.Errorf("accepted name %q", v.Name)
				}
				if seen[v.Name] {
					t.Errorf("%s returned twice", v.Name)
				}
				seen[v.Name] = true
				if strings.ContainsAny(v.Value, "\x00\r\n") {
					t.Errorf("%s: value holds a NUL or line break", v.Name)
				}
				esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "`", "\\`").Replace(v.Value)
				quoted.WriteString(v.Name + "=\"" + esc + "\"\n")
			}
			again, err := parseEnvFile(path, quoted.String())
			if err != nil || len(again) != len(vars) {
				t.Fatalf("round trip: %v, %d vars, want %d", err, len(again), len(vars))
			}
			for i := range vars {
				if again[i] != vars[i] {
					t.Errorf("round trip: %q became %q", vars[i], again[i])
				}
			}
			return
		}
		if vars != nil {
			t.Errorf("variables returned with an error")
		}
		lines := strings.Split(err.Error(), "\n")
		for _, l := range lines {
			if !strings.HasPrefix(l, path+":") {
				t.Errorf("error line %q does not start with %s:<line>:", l, path)
			}
		}
		for raw := range strings.SplitSeq(content, "\n") {
			_, val, ok := strings.Cut(raw, "=")
			if val = strings.Trim(val, " \t\r\"'"); ok && len(val) > maxShown && strings.Contains(err.Error(), val) {
				t.Errorf("error quotes a %d-character value:\n%v", len(val), err)
			}
		}
	})
}
