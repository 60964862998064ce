package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

func TestRunUsageErrors(t *testing.T) {
	clearEnv(t, "CWCREDS_")
	tests := []struct {
		name       string
		args       []string
		wantErr    string
		wantStderr string
	}{
		{"no command", nil, "no command", "Usage: cwcreds"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`, "Usage: cwcreds"},
		{"unknown serve flag", []string{"serve", "--port=1"}, "flag provided but not defined", "Usage: cwcreds serve"},
		{"unknown demo flag", []string{"demo", "-x"}, "flag provided but not defined", "-listen"},
		{"stray argument", []string{"version", "extra"}, `unexpected argument "extra"`, ""},
		{"bad config", []string{"serve"}, "CWCREDS_PROFILES", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tc.args, os.Environ(), &stdout, &stderr)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("run(%q) = %v, want a usage error (exit 2)", tc.args, err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error = %q, want it to mention %q", err, tc.wantErr)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}

func TestRunConfigErrorsAllAtOnce(t *testing.T) {
	clearEnv(t, "CWCREDS_")
	t.Setenv("CWCREDS_PROFILES", "train")
	t.Setenv("CWCREDS_PROFILE_TRAIN_SOURCE", "kerberos")
	t.Setenv("CWCREDS_LISTEN_ADDR", "0.0.0.0:7911")
	t.Setenv("CWCREDS_LOG_LEVL", "debug")
	err := run(t.Context(), []string{"serve"}, os.Environ(), &bytes.Buffer{}, &bytes.Buffer{})
	var ue *usageError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want a usage error", err)
	}
	for _, v := range []string{"CWCREDS_PROFILE_TRAIN_SOURCE", "CWCREDS_PROFILE_TRAIN_TOKEN_FILE", "CWCREDS_LISTEN_ADDR", "CWCREDS_LOG_LEVL"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s:\n%v", v, err)
		}
	}
}

func TestRunVersionAndHelp(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"version"}, nil, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "cwcreds ") {
		t.Errorf("version printed %q", stdout.String())
	}
	stdout.Reset()
	if err := run(t.Context(), []string{"help"}, nil, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"serve", "demo", "CWCREDS_LISTEN_ADDR", "CWCREDS_PROFILES", "_TOKEN_FILE"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if err := run(t.Context(), []string{"serve", "-h"}, nil, &stdout, &bytes.Buffer{}); err != nil {
		t.Errorf("serve -h = %v, want success", err)
	}
}

func TestDemoServesKeysFromEmulator(t *testing.T) {
	clearEnv(t, "CWCREDS_")
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0", "--duration", "20m"}, nil, pw, io.Discard)
		pw.Close()
	}()
	exports := map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok && strings.HasPrefix(line, "export ") {
			exports[k] = v
		}
		if strings.HasPrefix(line, "Press Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	uri := exports["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
	token := exports["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
	if uri == "" || token == "" || exports["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == "" {
		t.Fatalf("demo printed exports %v", exports)
	}
	if b, err := os.ReadFile(exports["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]); err != nil || string(b) != token {
		t.Errorf("token file holds %q (%v), want the exported token", b, err)
	}
	req, _ := http.NewRequest(http.MethodGet, uri, nil)
	req.Header.Set("Authorization", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body["AccessKeyId"], "CW") {
		t.Errorf("demo credentials: %d %v", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("demo returned %v after interrupt, want nil", err)
	}
}
