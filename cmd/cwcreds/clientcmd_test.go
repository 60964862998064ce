package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runClient runs a client command with the test's environment, as a user
// who sourced the daemon's environment file would.
func runClient(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = run(t.Context(), args, os.Environ(), &out, &errb)
	return out.String(), errb.String(), err
}

// useDaemonAddr points CWCREDS_LISTEN_ADDR at the running daemon (the test
// daemon listens on port 0).
func useDaemonAddr(t *testing.T, d *daemon) {
	t.Setenv("CWCREDS_LISTEN_ADDR", d.addr)
}

func TestCredentialProcessPrintsServedKey(t *testing.T) {
	d := startDaemon(t)
	useDaemonAddr(t, d)
	for _, profile := range []string{"train", "fast-exchange", "wif", "sso"} {
		t.Run(profile, func(t *testing.T) {
			out, errOut, err := runClient(t, "credential-process", "--profile", profile)
			if err != nil {
				t.Fatalf("credential-process: %v (stderr %q)", err, errOut)
			}
			if !strings.HasSuffix(out, "}\n") || strings.Count(out, "\n") != 1 {
				t.Errorf("output %q: want one JSON line", out)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("output %q is not JSON: %v", out, err)
			}
			if got["Version"] != float64(1) {
				t.Errorf("Version = %#v, want the number 1", got["Version"])
			}
			if _, ok := got["SessionToken"]; ok {
				t.Errorf("SessionToken present (%#v); plain keys have none, so it is omitted", got["SessionToken"])
			}
			if len(got) != 4 {
				t.Errorf("output has %d members, want Version, AccessKeyId, SecretAccessKey, Expiration: %s", len(got), out)
			}
			id, _ := got["AccessKeyId"].(string)
			key, ok := d.emu.Key(id)
			if !ok || key.SecretKey != got["SecretAccessKey"] {
				t.Fatalf("printed key %q is not one upstream minted", id)
			}
			exp, err := time.Parse(time.RFC3339, got["Expiration"].(string))
			if err != nil || !strings.HasSuffix(got["Expiration"].(string), "Z") || exp.Before(time.Now()) {
				t.Errorf("Expiration %q: want a future RFC 3339 UTC time (err %v)", got["Expiration"], err)
			}
			if errOut != "" {
				t.Errorf("stderr %q, want nothing on success", errOut)
			}
		})
	}
}

func TestCredentialProcessFailures(t *testing.T) {
	d := startDaemon(t)
	useDaemonAddr(t, d)
	wrong := filepath.Join(t.TempDir(), "wrong.token")
	if err := os.WriteFile(wrong, []byte(strings.Repeat("0", 64)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		usage bool   // exit status 2 rather than 1
		want  string // in the error
	}{
		{"no profile", nil, true, "--profile is required"},
		{"unknown profile", []string{"--profile", "nope"}, true, `no profile "nope" in CWCREDS_PROFILES (train, fast-exchange, wif, sso)`},
		{"wrong token", []string{"--profile", "train", "--token-file", wrong}, false, `refused profile "train": HTTP 401 Unauthorized`},
		{"missing token file", []string{"--profile", "train", "--token-file", wrong + "-missing"}, false, "cannot read profile \"train\"'s client token file"},
		{"stray argument", []string{"--profile", "train", "extra"}, true, "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runClient(t, append([]string{"credential-process"}, tc.args...)...)
			checkClientError(t, out, err, tc.usage, tc.want)
		})
	}

	// The daemon down: a clear message, exit 1.
	d.stop()
	d.stop = nil
	out, _, err := runClient(t, "credential-process", "--profile", "train")
	checkClientError(t, out, err, false, "cwcreds daemon not reachable at http://"+d.addr)

	// No configuration at all: say how to give it.
	clearEnv(t, "CWCREDS_")
	out, _, err = runClient(t, "credential-process", "--profile", "train")
	checkClientError(t, out, err, true, "run it with the daemon's environment")
}

func checkClientError(t *testing.T, out string, err error, usage bool, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded with %q, want an error containing %q", out, want)
	}
	if out != "" {
		t.Errorf("stdout %q on failure, want nothing", out)
	}
	var ue *usageError
	if errors.As(err, &ue) != usage {
		t.Errorf("error %v: usage error = %v, want %v", err, !usage, usage)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
}

func TestEnvPrintsExports(t *testing.T) {
	d := startDaemon(t)
	useDaemonAddr(t, d)
	out, _, err := runClient(t, "env", "--profile", "wif", "--s3-endpoint", "https://cwobject.com", "--region", "US-EAST-04A")
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := d.cfg.Profiles[2].ClientTokenFile
	want := "export AWS_CONTAINER_CREDENTIALS_FULL_URI='http://" + d.addr + "/v1/credentials/wif'\n" +
		"export AWS_CONTAINER_AUTHORIZATION_TOKEN='" + d.tokens["wif"] + "'\n" +
		"export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE='" + tokenFile + "'\n" +
		"export AWS_ENDPOINT_URL_S3='https://cwobject.com'\n" +
		"export AWS_REGION='US-EAST-04A'\n" +
		"export AWS_DEFAULT_REGION='US-EAST-04A'\n"
	if out != want {
		t.Errorf("env printed\n%s\nwant\n%s", out, want)
	}

	// The lines survive a real shell, whatever the path holds.
	if sh, err := exec.LookPath("sh"); err == nil {
		odd := filepath.Join(t.TempDir(), "it's $HOME `x`.token")
		if err := os.WriteFile(odd, []byte(d.tokens["train"]), 0o600); err != nil {
			t.Fatal(err)
		}
		out, _, err := runClient(t, "env", "--profile", "train", "--token-file", odd)
		if err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command(sh, "-c", out+`printf '%s\n%s' "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" "$AWS_CONTAINER_AUTHORIZATION_TOKEN"`).Output()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != odd+"\n"+d.tokens["train"] {
			t.Errorf("shell read back %q, want the path and token verbatim", got)
		}
	}

	// --keys exports the key itself.
	out, _, err = runClient(t, "env", "--profile", "train", "--keys")
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "export AWS_ACCESS_KEY_ID="); ok {
			id = strings.Trim(v, "'")
		}
	}
	key, ok := d.emu.Key(id)
	if !ok || !strings.Contains(out, "export AWS_SECRET_ACCESS_KEY='"+key.SecretKey+"'\n") ||
		!strings.Contains(out, "unset AWS_SESSION_TOKEN AWS_CONTAINER_CREDENTIALS_FULL_URI") {
		t.Errorf("env --keys printed\n%s\nwant the minted key and the unset line", out)
	}

	// Failures.
	_, _, err = runClient(t, "env", "--profile", "train", "--s3-endpoint", "cwobject.com")
	checkClientError(t, "", err, true, "is not an http(s) URL")
	_, _, err = runClient(t, "env")
	checkClientError(t, "", err, true, "--profile is required")
	t.Setenv("CWCREDS_LISTEN_ADDR", "127.0.0.1:0")
	_, _, err = runClient(t, "env", "--profile", "train")
	checkClientError(t, "", err, true, "no fixed port")
}

func TestDialAddr(t *testing.T) {
	tests := map[string]string{
		"127.0.0.1:7911": "127.0.0.1:7911",
		"localhost:7911": "localhost:7911",
		"0.0.0.0:7911":   "127.0.0.1:7911",
		"[::]:7911":      "127.0.0.1:7911",
		":7911":          "127.0.0.1:7911",
		"[::1]:7911":     "[::1]:7911",
		"10.0.0.5:7911":  "10.0.0.5:7911",
	}
	for in, want := range tests {
		if got, err := dialAddr(in); err != nil || got != want {
			t.Errorf("dialAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:0", "x"} {
		if got, err := dialAddr(bad); err == nil {
			t.Errorf("dialAddr(%q) = %q, want an error", bad, got)
		}
	}
}

func TestEnvWarnsAboutShadowingVariables(t *testing.T) {
	d := startDaemon(t)
	useDaemonAddr(t, d)
	clearEnv(t, "AWS_")
	out, errOut, err := runClient(t, "env", "--profile", "train")
	if err != nil {
		t.Fatal(err)
	}
	if errOut != "" {
		t.Errorf("stderr %q with a clean environment, want nothing", errOut)
	}
	clean := out

	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAOLD")
	t.Setenv("AWS_PROFILE", "")        // empty: shadows nothing
	t.Setenv("AWS_SESSION_TOKEN", "x") // not warned about alone
	out, errOut, err = runClient(t, "env", "--profile", "train")
	if err != nil {
		t.Fatal(err)
	}
	if out != clean {
		t.Errorf("stdout changed with the warnings:\n%s\nwant\n%s", out, clean)
	}
	want := "cwcreds env: warning: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set: wins over AWS_CONTAINER_CREDENTIALS_FULL_URI " +
		"in botocore, the CRT, the C++, Java and minio-go SDKs; unset it to use cwcreds\n" +
		"cwcreds env: warning: AWS_ACCESS_KEY_ID is set: environment keys come before the container endpoint in every SDK's chain; " +
		"unset it to use cwcreds\n" +
		"cwcreds env: to fix: unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_ACCESS_KEY_ID\n"
	if errOut != want {
		t.Errorf("stderr\n%s\nwant\n%s", errOut, want)
	}

	t.Setenv("AWS_PROFILE", "research")
	_, errOut, err = runClient(t, "env", "--profile", "train")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "warning: AWS_PROFILE is set") ||
		!strings.HasSuffix(errOut, "to fix: unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_ACCESS_KEY_ID AWS_PROFILE\n") {
		t.Errorf("stderr %q, want a warning for AWS_PROFILE too", errOut)
	}

	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks.amazonaws.com/serviceaccount/token")
	_, errOut, err = runClient(t, "env", "--profile", "train")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "warning: AWS_WEB_IDENTITY_TOKEN_FILE is set") ||
		!strings.HasSuffix(errOut, "to fix: unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_ACCESS_KEY_ID AWS_PROFILE AWS_WEB_IDENTITY_TOKEN_FILE\n") {
		t.Errorf("stderr %q, want a warning for AWS_WEB_IDENTITY_TOKEN_FILE too", errOut)
	}

	// --keys exports keys of its own, which win over all of these.
	out, errOut, err = runClient(t, "env", "--profile", "train", "--keys")
	if err != nil || errOut != "" || !strings.Contains(out, "export AWS_ACCESS_KEY_ID=") {
		t.Errorf("env --keys: err %v, stderr %q, stdout %q; want keys and no warning", err, errOut, out)
	}
}

// The commands that call the daemon share one HTTP client, which never goes
// through a proxy: with every proxy variable pointing at a dead address
// they still reach the daemon. (net/http never proxies a loopback address
// anyway; a daemon listening on another address would be, so the client
// must have no Proxy at all.)
func TestClientCommandsIgnoreProxyVariables(t *testing.T) {
	d := startDaemon(t)
	useDaemonAddr(t, d)
	for _, v := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"} {
		t.Setenv(v, "http://127.0.0.1:1") // nothing listens on port 1
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	for _, args := range [][]string{
		{"credential-process", "--profile", "train"},
		{"env", "--profile", "train", "--keys"},
		{"status"},
		{"revoke", "--profile", "train"},
	} {
		if _, errOut, err := runClient(t, args...); err != nil {
			t.Errorf("%s with HTTP_PROXY set: %v (stderr %q)", args[0], err, errOut)
		}
	}
	if tr, ok := daemonHTTPClient(trustFor(), time.Second).Transport.(*http.Transport); !ok || tr.Proxy != nil {
		t.Errorf("daemonHTTPClient's transport %#v: want an *http.Transport without Proxy", tr)
	}
	// No other client: the commands never use net/http's default one.
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"http.DefaultClient", "http.DefaultTransport", "http.Get(", "http.Post(", "http.Head("} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s uses %s, which honours the proxy variables; use daemonHTTPClient", f, bad)
			}
		}
	}
}
