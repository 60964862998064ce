package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostileDaemon answers every credential request with reply, as a
// compromised or impersonated daemon (a port squatter) would.
func hostileDaemon(t *testing.T, reply map[string]string) (addr, tokenFile string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reply)
	}))
	t.Cleanup(srv.Close)
	tokenFile = filepath.Join(t.TempDir(), "client.token")
	if err := os.WriteFile(tokenFile, []byte(strings.Repeat("a", 64)), 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "http://"), tokenFile
}

// TestEnvKeysRefusesHostileReply is finding 3 of issue 11: a daemon reply
// whose fields carry shell syntax must never reach eval. Each case's output,
// if any, is run by a real sh; the marker file must not appear, and the
// command must fail without printing anything.
func TestEnvKeysRefusesHostileReply(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	good := map[string]string{
		"AccessKeyId":     "CWABCDEFGHIJKLMN",
		"SecretAccessKey": "cwo" + strings.Repeat("x", 40),
		"Token":           "",
		"Expiration":      "2030-01-02T03:04:05Z",
	}
	with := func(field, v string) map[string]string {
		m := make(map[string]string, len(good))
		for k, x := range good {
			m[k] = x
		}
		m[field] = v
		return m
	}
	// payload is what each hostile field tries to run.
	payload := func(marker string) string { return "touch " + marker }
	tests := []struct {
		name  string
		reply func(marker string) map[string]string
	}{
		{"key id newline", func(m string) map[string]string { return with("AccessKeyId", "CWX\n"+payload(m)+"\n#") }},
		{"key id carriage return and newline", func(m string) map[string]string { return with("AccessKeyId", "CWX\r\n"+payload(m)+";#") }},
		{"key id command substitution", func(m string) map[string]string { return with("AccessKeyId", "CW$("+payload(m)+")") }},
		{"key id quote break", func(m string) map[string]string { return with("AccessKeyId", "CW';"+payload(m)+";'") }},
		{"expiry newline", func(m string) map[string]string { return with("Expiration", "2030-01-02T03:04:05Z\n"+payload(m)+"\n") }},
		{"expiry not RFC 3339", func(m string) map[string]string { return with("Expiration", "tomorrow;"+payload(m)) }},
		{"secret newline", func(m string) map[string]string { return with("SecretAccessKey", "abc\n"+payload(m)) }},
		{"secret too long", func(m string) map[string]string { return with("SecretAccessKey", strings.Repeat("s", 1025)) }},
		{"token newline", func(m string) map[string]string { return with("Token", "t\n"+payload(m)) }},
		{"key id empty", func(m string) map[string]string { return with("AccessKeyId", "") }},
		{"key id too long", func(m string) map[string]string { return with("AccessKeyId", strings.Repeat("A", 129)) }},
		{"key id non-ASCII", func(m string) map[string]string { return with("AccessKeyId", "CW\u2028"+payload(m)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "pwned")
			addr, tokenFile := hostileDaemon(t, tt.reply(marker))
			var out, errb bytes.Buffer
			runErr := run(t.Context(), []string{"env", "--keys", "--profile", "train", "--addr", addr, "--token-file", tokenFile},
				nil, &out, &errb)
			if out.Len() > 0 {
				if err := exec.Command(sh, "-c", out.String()).Run(); err != nil {
					t.Logf("sh: %v", err)
				}
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("eval of env --keys output ran the daemon's payload:\n%s", out.String())
			}
			if runErr == nil || out.Len() > 0 {
				t.Errorf("env --keys = %v, printed %q; want an error and nothing printed", runErr, out.String())
			}
			// credential-process validates the same reply.
			out.Reset()
			if err := run(t.Context(), []string{"credential-process", "--profile", "train", "--addr", addr, "--token-file", tokenFile},
				nil, &out, &errb); err == nil || out.Len() > 0 {
				t.Errorf("credential-process = %v, printed %q; want an error and nothing printed", err, out.String())
			}
		})
	}

	// A valid reply whose secret holds every shell metacharacter the
	// validation allows survives eval verbatim.
	t.Run("valid odd secret round-trips", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "pwned")
		secret := "a'b;`touch " + marker + "`$(touch " + marker + ")|&<>*?~!#"
		addr, tokenFile := hostileDaemon(t, with("SecretAccessKey", strings.ReplaceAll(secret, " ", "_")))
		var out, errb bytes.Buffer
		if err := run(t.Context(), []string{"env", "--keys", "--profile", "train", "--addr", addr, "--token-file", tokenFile},
			nil, &out, &errb); err != nil {
			t.Fatalf("env --keys: %v (stderr %q)", err, errb.String())
		}
		got, err := exec.Command(sh, "-c", out.String()+`printf '%s|%s' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"`).Output()
		if err != nil {
			t.Fatalf("sh: %v\n%s", err, out.String())
		}
		if want := good["AccessKeyId"] + "|" + strings.ReplaceAll(secret, " ", "_"); string(got) != want {
			t.Errorf("shell read back %q, want %q", got, want)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("eval ran a command from the secret:\n%s", out.String())
		}
	})

	// A profile name given on the command line never breaks out either.
	t.Run("profile newline", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "pwned")
		addr, tokenFile := hostileDaemon(t, good)
		var out, errb bytes.Buffer
		runErr := run(t.Context(), []string{"env", "--keys", "--profile", "train\ntouch " + marker + "\n", "--addr", addr, "--token-file", tokenFile},
			nil, &out, &errb)
		if out.Len() > 0 {
			_ = exec.Command(sh, "-c", out.String()).Run()
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("eval ran a command from the profile name:\n%s", out.String())
		}
		if runErr == nil {
			t.Errorf("env --keys with a newline in --profile succeeded; want a usage error")
		}
	})
}
