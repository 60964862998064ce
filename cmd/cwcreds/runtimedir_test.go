package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/config"
)

// runtimeDirConfig is a one-profile configuration whose client token and
// admin token live in runtimeDir. Nothing is minted: these tests stop at
// start-up.
func runtimeDirConfig(t *testing.T, runtimeDir string) *config.Config {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "api-token")
	if err := os.WriteFile(tokenFile, []byte("CW-SECRET-runtime-dir-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{ListenAddr: "127.0.0.1:0", APIURL: "http://127.0.0.1:9", LogLevel: "debug", LogFormat: "json",
		RuntimeDir: runtimeDir, NodeName: "gpu-node-7",
		Profiles: []config.Profile{{Name: "train", EnvName: "TRAIN", Source: "access-key", TokenFile: tokenFile,
			Duration: time.Hour, ClientTokenFile: filepath.Join(runtimeDir, "train.token")}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serveOnce runs serve for cfg and returns its error, failing the test if
// it starts serving or takes more than 10 s.
func serveOnce(t *testing.T, cfg *config.Config) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, &syncBuffer{}, func(net.Addr, map[string]string) {
			t.Error("the daemon started serving")
			cancel()
		})
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("serve neither failed nor returned within 10s")
		return nil
	}
}

// TestServeRefusesUnsafeRuntimeDir: finding 2 end to end. Another user
// (a real process as uid 65534) plants train.token in a runtime directory
// others can write; the daemon used to adopt it as the profile's client
// token. It refuses to start now, naming the directory, its owner and
// mode, and the fix. The same directory with only the admin token in it
// (every client token elsewhere) is refused too.
func TestServeRefusesUnsafeRuntimeDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the attacker as uid 65534; CI runs as root")
	}
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := filepath.Join(base, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(run, 0o777|os.ModeSticky); err != nil { // as /tmp: sticky does not help
		t.Fatal(err)
	}
	planted := filepath.Join(run, "train.token")
	cmd := exec.Command("/bin/sh", "-c", "printf attacker-chosen-client-token > "+planted)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plant as uid 65534: %v %s", err, out)
	}

	cfg := runtimeDirConfig(t, run)
	err := serveOnce(t, cfg)
	if err == nil {
		t.Fatal("serve started with a world-writable runtime directory holding a planted client token")
	}
	for _, want := range []string{run, "mode 1777", "RuntimeDirectoryMode=0750", "chmod 0750"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	// Client token elsewhere: the admin token's directory is still checked.
	cfg.Profiles[0].ClientTokenFile = filepath.Join(t.TempDir(), "train.token")
	err = serveOnce(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "runtime directory") || !strings.Contains(err.Error(), run) {
		t.Errorf("serve with only the admin token in the unsafe directory: %v, want a runtime directory refusal", err)
	}
	if _, err := os.Lstat(filepath.Join(run, adminTokenName)); err == nil {
		t.Error("an admin token was written to the unsafe directory")
	}
}

// TestServeRefusesSymlinkedClientToken: a client token file that is a
// symlink to the upstream token file (planted while the directory was
// unsafe) made the CoreWeave API token every client's client token, and so
// readable by group cwcreds. It is refused at start now, without quoting
// the token.
func TestServeRefusesSymlinkedClientToken(t *testing.T) {
	run := t.TempDir()
	cfg := runtimeDirConfig(t, run)
	if err := os.Symlink(cfg.Profiles[0].TokenFile, cfg.Profiles[0].ClientTokenFile); err != nil {
		t.Fatal(err)
	}
	err := serveOnce(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), cfg.Profiles[0].ClientTokenFile) {
		t.Fatalf("serve = %v, want a refusal of the symlinked client token", err)
	}
	if strings.Contains(err.Error(), "CW-SECRET") {
		t.Error("the error quotes the upstream token")
	}
}

// TestServeReplacesPlantedAdminToken: an admin-token symlink left in the
// runtime directory is replaced by the new token file, never written
// through (it used to be removed and re-created by name, a window for
// anyone able to write the directory).
func TestServeReplacesPlantedAdminToken(t *testing.T) {
	run := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("unchanged"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(run, adminTokenName)); err != nil {
		t.Fatal(err)
	}
	cfg := runtimeDirConfig(t, run)
	tok, err := newAdminToken(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "unchanged" {
		t.Errorf("the symlink's target was overwritten: %q", b)
	}
	fi, err := os.Lstat(filepath.Join(run, adminTokenName))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v, %v; want a regular 0600 file", fi, err)
	}
	if got := readTrimmed(t, filepath.Join(run, adminTokenName)); got != tok {
		t.Errorf("admin token file holds %q, want %q", got, tok)
	}
}

// TestReloadFIFOClientTokenDoesNotBlock: a FIFO at a client token path
// blocked the reload in open(2) waiting for a writer; the reload runs on
// the main loop, so the daemon then ignored SIGTERM (and its watchdog)
// for good. The reload is rejected at once now, and the daemon stops when
// told to.
func TestReloadFIFOClientTokenDoesNotBlock(t *testing.T) {
	r := startReloadRig(t, map[string]string{"keep": keyProfile})
	r.waitHealthy(t, "keep")
	fifo := filepath.Join(r.base["CWCREDS_RUNTIME_DIR"], "fifo.token")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	unblock := func() { // lets a blocked open return, so a failing test still ends
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
	}
	r.write(t, map[string]string{"keep": keyProfile + "\nCLIENT_TOKEN_FILE=" + fifo})
	r.hup <- syscall.SIGHUP
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.logs.String(), `"event":"reload_rejected"`) {
		if time.Now().After(deadline) {
			go unblock()
			t.Fatalf("the reload did not finish within 10s: blocked on the FIFO; logs:\n%s", r.logs.String())
		}
		time.Sleep(5 * time.Millisecond) // polling the log, bounded by deadline
	}
	if l := r.logs.String(); !strings.Contains(l, "FIFO") || !strings.Contains(l, fifo) {
		t.Errorf("the rejection does not name the FIFO:\n%s", l)
	}
	stopped := make(chan struct{})
	stop := r.stop
	r.stop = nil
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		go unblock()
		t.Fatal("the daemon did not stop within 15s of SIGTERM")
	}
}
