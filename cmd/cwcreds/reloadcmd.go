package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cwcreds/cwcreds/config"
)

// reloadFile is the name, in the daemon's runtime directory, of the file
// where the daemon reports the outcome of its latest reload.
const reloadFile = "reload.json"

// reloadFileMode lets the daemon's group (the service user's, as for the
// client tokens) read the outcome: it holds no secret.
const reloadFileMode = 0o640

// Outcomes of a reload.
const (
	reloadApplied       = "applied"        // the file's configuration runs now
	reloadRejected      = "rejected"       // nothing changed; Problems say why
	reloadNotReloadable = "not-reloadable" // no CWCREDS_ENV_FILE: nothing to re-read
)

// reloadOutcome is reload.json: what the daemon with PID did with the
// reload that began at StartedUsec (CLOCK_MONOTONIC microseconds, the
// clock of systemd's MONOTONIC_USEC=, shared by every process on the host).
// `cwcreds reload` reads the clock before it sends SIGHUP, so an outcome
// with its PID and a StartedUsec at or after that reading answers its
// signal, and an older one (a reload before, a previous daemon) does not.
//
// It never holds a secret: Detail names profiles, and Problems are
// configuration problems ("VAR: msg", which quote no value) or errors that
// name variables, profiles and paths only.
type reloadOutcome struct {
	PID         int    `json:"pid"`
	StartedUsec int64  `json:"startedMonotonicUsec"`
	Outcome     string `json:"outcome"`
	// Detail is a one-line summary of an applied or not-reloadable reload.
	Detail string `json:"detail,omitempty"`
	// Problems are every reason a rejected reload was rejected.
	Problems []string `json:"problems,omitempty"`
}

// recordReload writes out as reload.json in the runtime directory,
// atomically (a temporary file renamed over it), so a reader sees the old
// outcome or the new one, never a part. A failure is logged: `cwcreds
// reload` then times out and points at the journal, which has the outcome.
func (d *node) recordReload(out reloadOutcome) {
	dir := d.cfg.RuntimeDir
	if dir == "" {
		return
	}
	if err := writeReloadOutcome(dir, out); err != nil {
		d.log.Warn().Err(err).Msg("cannot record the reload's outcome for `cwcreds reload`")
	}
}

func writeReloadOutcome(dir string, out reloadOutcome) error {
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("runtime directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".reload-*.json")
	if err != nil {
		return fmt.Errorf("write %s: %w", reloadFile, err)
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Chmod(reloadFileMode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, reloadFile))
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", reloadFile, err)
	}
	return nil
}

// reloadPollInterval is how often `cwcreds reload` looks for the outcome.
const reloadPollInterval = 20 * time.Millisecond

// errReloadRejected: the daemon rejected the reloaded configuration.
var errReloadRejected = errors.New("configuration rejected")

// reloadCmd is `cwcreds reload [--pid PID] [--timeout 30s]`, the unit's
// ExecReload: it sends the daemon SIGHUP and waits until the daemon reports
// the outcome of a reload that began after the signal, so that `systemctl
// reload cwcreds` returns only then, and fails when the file was rejected.
// It prints one line and returns nil when the configuration was applied
// (or there was nothing to re-read), and an error listing every problem
// when it was rejected (the daemon keeps its previous configuration), when
// no answer comes within the timeout, or when there is no such process.
func reloadCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "the daemon's process id (default: $MAINPID, which systemd sets for ExecReload)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the daemon's answer")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *pid == 0 {
		if v := lookupEnv(environ, "MAINPID"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return &usageError{fmt.Errorf("reload: MAINPID=%q is not a process id; pass --pid", v)}
			}
			*pid = n
		}
	}
	if *pid <= 0 {
		return &usageError{errors.New("reload: no daemon process id: pass --pid PID, or run it as the unit's ExecReload (systemd sets $MAINPID)")}
	}
	if *timeout <= 0 {
		return &usageError{fmt.Errorf("reload: --timeout %v must be positive", *timeout)}
	}
	dirs := reloadDirs(environ)
	if len(dirs) == 0 {
		return &usageError{errors.New("reload: cannot tell the daemon's runtime directory; set CWCREDS_RUNTIME_DIR as the daemon has it")}
	}

	sent, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if err := unix.Kill(*pid, syscall.SIGHUP); err != nil {
		switch {
		case errors.Is(err, unix.ESRCH):
			return fmt.Errorf("reload: no process with pid %d: is cwcreds running? (systemctl status cwcreds)", *pid)
		case errors.Is(err, unix.EPERM):
			return fmt.Errorf("reload: not allowed to signal pid %d: run as root or as the daemon's user", *pid)
		}
		return fmt.Errorf("reload: signal pid %d: %w", *pid, err)
	}
	out, err := waitReload(ctx, func() []reloadOutcome { return readReloadOutcomes(dirs) }, *pid, sent, reloadPollInterval, *timeout)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return reportReload(stdout, out)
}

// reportReload prints an applied or not-reloadable outcome on one line, or
// returns a rejected one as an error listing every problem.
func reportReload(stdout io.Writer, out *reloadOutcome) error {
	switch out.Outcome {
	case reloadApplied:
		_, err := fmt.Fprintf(stdout, "cwcreds pid %d applied the configuration: %s\n", out.PID, out.Detail)
		return err
	case reloadNotReloadable:
		_, err := fmt.Fprintf(stdout, "cwcreds pid %d had nothing to reload: %s\n", out.PID, out.Detail)
		return err
	case reloadRejected:
		var b strings.Builder
		for _, p := range out.Problems {
			b.WriteString("\n  " + p)
		}
		return fmt.Errorf("cwcreds pid %d: %w; it keeps running with its previous configuration (journalctl -u cwcreds):%s",
			out.PID, errReloadRejected, b.String())
	default:
		return fmt.Errorf("cwcreds pid %d reported the unknown reload outcome %q", out.PID, out.Outcome)
	}
}

// waitReload polls read every poll until it returns an outcome of pid's
// reload that started at or after sent, and returns it; outcomes from
// before (an earlier reload, another process) are ignored. It gives up
// after timeout, or when ctx ends.
func waitReload(ctx context.Context, read func() []reloadOutcome, pid int, sent int64, poll, timeout time.Duration) (*reloadOutcome, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		for _, o := range read() {
			if o.PID == pid && o.StartedUsec >= sent {
				return &o, nil
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				return nil, fmt.Errorf("no answer from cwcreds pid %d in %v; see journalctl -u cwcreds", pid, timeout)
			}
			return nil, ctx.Err()
		}
	}
}

// readReloadOutcomes reads reload.json in each of dirs, skipping files
// that are missing or unreadable (not written yet, or a daemon of another
// configuration).
func readReloadOutcomes(dirs []string) []reloadOutcome {
	var outs []reloadOutcome
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, reloadFile))
		if err != nil {
			continue
		}
		var o reloadOutcome
		if json.Unmarshal(b, &o) == nil {
			outs = append(outs, o)
		}
	}
	return outs
}

// reloadDirs are the directories where the daemon may write reload.json:
// its runtime directory as the env file sets it (CWCREDS_RUNTIME_DIR in
// $CWCREDS_ENV_FILE, which wins over the process environment in the
// daemon too), and as config.LoadLocal resolves it from the environment
// ($RUNTIME_DIRECTORY under systemd). A runtime directory cannot change
// by reload, so the daemon's is one of them unless the file has a pending
// change to it, which the reload rejects.
func reloadDirs(environ []string) []string {
	var dirs []string
	if path := lookupEnv(environ, envFileVar); path != "" {
		if vars, err := config.ReadEnvFile(path, insecureModesAllowed(environ)); err == nil {
			for _, v := range vars {
				if v.Name == "CWCREDS_RUNTIME_DIR" && filepath.IsAbs(v.Value) {
					dirs = append(dirs, filepath.Clean(v.Value))
				}
			}
		}
	}
	if l, err := config.LoadLocal(environ); err == nil && (len(dirs) == 0 || dirs[0] != l.RuntimeDir) {
		dirs = append(dirs, l.RuntimeDir)
	}
	return dirs
}
