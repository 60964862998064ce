package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// TestReloadCommand runs the real binary twice over: the daemon (serve,
// with CWCREDS_ENV_FILE) and `cwcreds reload --pid`, as systemd's
// ExecReload runs it. A changed file is applied (exit 0, the new profile
// serves, same PID); a broken one makes reload exit 1 printing the problem
// with its variable, while the daemon keeps serving the old profiles.
// Both reloads are told to systemd (a fake NOTIFY_SOCKET) as RELOADING=1
// with MONOTONIC_USEC=, then READY=1 (see expectReloadNotified).
func TestReloadCommand(t *testing.T) {
	dir := t.TempDir()
	apiURL, tokenFile, apiToken := apiTokenUpstream(t, dir, nil)
	runDir := filepath.Join(dir, "run")
	envFile := filepath.Join(dir, "cwcreds.env")
	writeEnv := envFileWriter(t, envFile, apiURL, runDir, tokenFile)
	writeEnv("", "a")

	env := []string{execMainVar + "=1", "CWCREDS_ENV_FILE=" + envFile, "PATH=" + os.Getenv("PATH")}
	sock := listenNotifySocket(t) // systemd's end of Type=notify, for the daemon only
	daemon := exec.Command(os.Args[0], "serve")
	daemon.Env = append(slices.Clone(env), "NOTIFY_SOCKET="+os.Getenv("NOTIFY_SOCKET"))
	stderr, err := daemon.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var logs syncBuffer
	go func() {
		io.Copy(&logs, stderr)
		daemon.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		daemon.Process.Signal(syscall.SIGTERM)
		<-exited
	})
	addr := waitLogField(t, &logs, "cwcreds serving", "listen")
	sock.expect("READY=1")
	get := func(profile string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/credentials/"+profile, nil)
		req.Header.Set("Authorization", readTrimmed(t, filepath.Join(runDir, profile+".token")))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("a"); code != http.StatusOK {
		t.Fatalf("GET a = %d", code)
	}
	pid := strconv.Itoa(daemon.Process.Pid)
	reload := func(args ...string) (code int, stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], append([]string{"reload"}, args...)...)
		cmd.Env = env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			code = ee.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return code, out.String(), errOut.String()
	}

	// A new profile: applied, served by the same process.
	writeEnv("", "a", "b")
	before := monotonicNow(t)
	code, out, errOut := reload("--pid", pid)
	expectReloadNotified(t, sock, before, monotonicNow(t))
	if code != 0 || !strings.Contains(out, "cwcreds pid "+pid+" applied the configuration") || !strings.Contains(out, "added b") {
		t.Fatalf("reload = exit %d, stdout %q, stderr %q; want 0 and the applied line\nlogs:\n%s", code, out, errOut, logs.String())
	}
	if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 {
		t.Errorf("stdout has %d lines, want one: %q", n+1, out)
	}
	if code := get("b"); code != http.StatusOK {
		t.Errorf("GET b after the reload = %d, want 200", code)
	}

	// A broken file: rejected, the problem printed, the old profiles kept.
	writeEnv("CWCREDS_PROFILE_C_DURATION=forever\n", "a", "b", "c")
	before = monotonicNow(t)
	code, out, errOut = reload("--pid", pid, "--timeout", "20s")
	expectReloadNotified(t, sock, before, monotonicNow(t))
	if code != 1 || !strings.Contains(errOut, "configuration rejected") ||
		!strings.Contains(errOut, "CWCREDS_PROFILE_C_DURATION: ") || !strings.Contains(errOut, "previous configuration") {
		t.Fatalf("reload of a broken file = exit %d, stdout %q, stderr %q; want 1 naming CWCREDS_PROFILE_C_DURATION", code, out, errOut)
	}
	for _, p := range []string{"a", "b"} {
		if code := get(p); code != http.StatusOK {
			t.Errorf("GET %s after the rejected reload = %d, want 200", p, code)
		}
	}
	select {
	case <-exited:
		t.Fatalf("the daemon exited; logs:\n%s", logs.String())
	default:
	}

	// What the daemon wrote holds no secret, and only its group may read it.
	fi, err := os.Stat(filepath.Join(runDir, reloadFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != reloadFileMode {
		t.Errorf("%s mode %04o, want %04o", reloadFile, fi.Mode().Perm(), reloadFileMode)
	}
	written := readTrimmed(t, filepath.Join(runDir, reloadFile)) + out + errOut
	for _, secret := range []string{apiToken, readTrimmed(t, filepath.Join(runDir, "a.token")), readTrimmed(t, filepath.Join(runDir, "b.token"))} {
		if strings.Contains(written, secret[:auditWindow]) {
			t.Errorf("reload output or %s holds a token: %s", reloadFile, written)
		}
	}

	// No such process, and no process id at all.
	if code, _, errOut := reload("--pid", strconv.Itoa(1<<30)); code != 1 || !strings.Contains(errOut, "no process with pid") {
		t.Errorf("reload of a missing pid = exit %d, %q; want 1, no process", code, errOut)
	}
	if code, _, errOut := reload(); code != 2 || !strings.Contains(errOut, "MAINPID") {
		t.Errorf("reload without a pid = exit %d, %q; want 2 naming $MAINPID", code, errOut)
	}
}

func monotonicNow(t *testing.T) int64 {
	t.Helper()
	usec, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	return usec
}

// expectReloadNotified reads the daemon's sd_notify messages up to the end
// of a reload that `cwcreds reload` ran between before and after
// (CLOCK_MONOTONIC microseconds, the same clock in every process): a
// RELOADING=1 whose MONOTONIC_USEC= lies within them, as
// Type=notify-reload requires, then READY=1 with a STATUS=, which the
// daemon sends before it records the outcome `cwcreds reload` waits for,
// so both are already queued on the socket. STATUS= updates may come
// between the two.
func expectReloadNotified(t *testing.T, sock *notifySocket, before, after int64) {
	t.Helper()
	msg, _ := sock.expect("RELOADING=1")
	usec := int64(-1)
	for l := range strings.SplitSeq(msg, "\n") {
		if v, ok := strings.CutPrefix(l, "MONOTONIC_USEC="); ok {
			usec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if usec < before || usec > after {
		t.Errorf("reload notification %q: MONOTONIC_USEC= is not within the reload [%d, %d]", msg, before, after)
	}
	for {
		msg := sock.next(10 * time.Second)
		switch {
		case hasLine(msg, "READY=1"):
			if !strings.Contains(msg, "\nSTATUS=") {
				t.Errorf("reload's READY=1 %q carries no STATUS=", msg)
			}
			return
		case msg == "" || hasLine(msg, "RELOADING=1"):
			t.Fatalf("after RELOADING=1: %q, want READY=1 ending the reload", msg)
		}
	}
}

// TestWaitReload: an outcome from before the signal, or another process's,
// is not the answer; the one written after is; without one, the wait ends
// at the timeout with a message pointing at the journal.
func TestWaitReload(t *testing.T) {
	const pid, sent = 4242, int64(1_000_000)
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		file := []reloadOutcome{
			{PID: pid, StartedUsec: sent - 1, Outcome: reloadRejected, Problems: []string{"stale"}}, // an earlier reload
			{PID: pid + 1, StartedUsec: sent + 5, Outcome: reloadRejected},                          // a previous daemon
		}
		read := func() []reloadOutcome {
			mu.Lock()
			defer mu.Unlock()
			return file
		}
		go func() {
			time.Sleep(95 * time.Millisecond) // the daemon answers later
			mu.Lock()
			defer mu.Unlock()
			file = append(file, reloadOutcome{PID: pid, StartedUsec: sent, Outcome: reloadApplied, Detail: "fresh"})
		}()
		start := time.Now()
		got, err := waitReload(t.Context(), read, pid, sent, reloadPollInterval, 30*time.Second)
		if err != nil || got.Detail != "fresh" {
			t.Fatalf("waitReload = %+v, %v; want the fresh outcome", got, err)
		}
		if took := time.Since(start); took != 100*time.Millisecond {
			t.Errorf("answered after %v, want the first poll after it appeared (100ms)", took)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		stale := func() []reloadOutcome {
			return []reloadOutcome{{PID: pid, StartedUsec: sent - 1, Outcome: reloadApplied}}
		}
		start := time.Now()
		_, err := waitReload(t.Context(), stale, pid, sent, reloadPollInterval, 30*time.Second)
		want := fmt.Sprintf("no answer from cwcreds pid %d in 30s; see journalctl -u cwcreds", pid)
		if err == nil || err.Error() != want {
			t.Fatalf("waitReload = %v, want %q", err, want)
		}
		if took := time.Since(start); took != 30*time.Second {
			t.Errorf("gave up after %v, want 30s", took)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := waitReload(ctx, func() []reloadOutcome { return nil }, pid, sent, reloadPollInterval, time.Second); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled wait = %v, want context.Canceled", err)
		}
	})
}

func TestReportReload(t *testing.T) {
	var out bytes.Buffer
	if err := reportReload(&out, &reloadOutcome{PID: 7, Outcome: reloadApplied, Detail: "2 profiles: kept a, added b"}); err != nil ||
		out.String() != "cwcreds pid 7 applied the configuration: 2 profiles: kept a, added b\n" {
		t.Errorf("applied: %q, %v", out.String(), err)
	}
	out.Reset()
	if err := reportReload(&out, &reloadOutcome{PID: 7, Outcome: reloadNotReloadable, Detail: "no file"}); err != nil ||
		!strings.Contains(out.String(), "nothing to reload") {
		t.Errorf("not-reloadable: %q, %v", out.String(), err)
	}
	out.Reset()
	err := reportReload(&out, &reloadOutcome{PID: 7, Outcome: reloadRejected, Problems: []string{"CWCREDS_X: bad", "CWCREDS_Y: worse"}})
	if !errors.Is(err, errReloadRejected) || !strings.Contains(err.Error(), "\n  CWCREDS_X: bad\n  CWCREDS_Y: worse") || out.Len() != 0 {
		t.Errorf("rejected: %v (stdout %q), want every problem on its own line", err, out.String())
	}
}

// TestRecordReloadAtomicAndReadable: reload.json is replaced whole, with
// mode 0640, and read back as written.
func TestRecordReloadAtomicAndReadable(t *testing.T) {
	dir := t.TempDir()
	for i, o := range []reloadOutcome{
		{PID: 1, StartedUsec: 10, Outcome: reloadRejected, Problems: []string{"CWCREDS_X: bad"}},
		{PID: 1, StartedUsec: 20, Outcome: reloadApplied, Detail: "1 profiles"},
	} {
		if err := writeReloadOutcome(dir, o); err != nil {
			t.Fatal(err)
		}
		got := readReloadOutcomes([]string{filepath.Join(dir, "missing"), dir})
		if len(got) != 1 || got[0].StartedUsec != o.StartedUsec || got[0].Outcome != o.Outcome {
			t.Errorf("write %d: read back %+v, want %+v", i, got, o)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("dir holds %v (%v), want only %s", entries, err, reloadFile)
	}
	if fi, _ := entries[0].Info(); fi.Mode().Perm() != reloadFileMode {
		t.Errorf("mode %04o, want %04o", fi.Mode().Perm(), reloadFileMode)
	}
}
