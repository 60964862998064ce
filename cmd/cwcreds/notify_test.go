package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// notifySocket is a fake service manager: a unixgram socket whose path the
// test exports as NOTIFY_SOCKET, as systemd does for Type=notify units.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
}

func listenNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	// Not t.TempDir(): a socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "sdnotify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &notifySocket{t: t, conn: conn}
}

// next returns the next datagram, or "" if none arrives within wait.
func (s *notifySocket) next(wait time.Duration) string {
	s.t.Helper()
	buf := make([]byte, 4096)
	if err := s.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		s.t.Fatal(err)
	}
	n, _, err := s.conn.ReadFromUnix(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return string(buf[:n])
}

// expect reads datagrams until one has the line want, failing after 10 s.
// It returns the whole datagram and how many others it skipped.
func (s *notifySocket) expect(want string) (msg string, skipped int) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		msg := s.next(time.Until(deadline))
		if hasLine(msg, want) {
			return msg, skipped
		}
		if msg != "" {
			skipped++
		}
	}
	s.t.Fatalf("no %q on NOTIFY_SOCKET within 10s", want)
	return "", 0
}

func hasLine(msg, line string) bool {
	for l := range strings.SplitSeq(msg, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func TestNotifySystemdReadyWatchdogStopping(t *testing.T) {
	sock := listenNotifySocket(t)
	const interval = 20 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(interval/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stop := notifySystemd(ctx, zerolog.Nop(), "serving 2 profiles on 127.0.0.1:7911")

	// READY=1 comes first, with the status systemctl shows.
	msg := sock.next(10 * time.Second)
	if !hasLine(msg, "READY=1") || !hasLine(msg, "STATUS=serving 2 profiles on 127.0.0.1:7911") {
		t.Fatalf("first message = %q, want READY=1 and the status", msg)
	}
	// Then the watchdog, repeatedly (every 10ms here).
	for i := range 3 {
		if msg, skipped := sock.expect("WATCHDOG=1"); skipped > 0 || msg != "WATCHDOG=1" {
			t.Fatalf("watchdog ping %d: %q after %d other messages", i, msg, skipped)
		}
	}

	// Ending the serve context sends STOPPING=1; stop joins the goroutine,
	// so nothing follows it.
	cancel()
	stop()
	sock.expect("STOPPING=1")
	if msg := sock.next(5 * interval); msg != "" {
		t.Errorf("message %q after STOPPING=1 and stop()", msg)
	}
}

func TestNotifySystemdWithoutWatchdog(t *testing.T) {
	sock := listenNotifySocket(t)
	t.Setenv("WATCHDOG_USEC", "")
	stop := notifySystemd(t.Context(), zerolog.Nop(), "ok")
	if msg := sock.next(10 * time.Second); !hasLine(msg, "READY=1") {
		t.Fatalf("first message = %q, want READY=1", msg)
	}
	// serve failing (not its context ending) still says STOPPING=1.
	stop()
	if msg := sock.next(10 * time.Second); !hasLine(msg, "STOPPING=1") {
		t.Fatalf("after stop: %q, want STOPPING=1 (and no watchdog pings)", msg)
	}
}

func TestNotifySystemdWatchdogForAnotherPID(t *testing.T) {
	sock := listenNotifySocket(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1)) // the watchdog is someone else's
	stop := notifySystemd(t.Context(), zerolog.Nop(), "ok")
	sock.expect("READY=1")
	stop()
	if msg := sock.next(10 * time.Second); !hasLine(msg, "STOPPING=1") {
		t.Fatalf("got %q, want STOPPING=1 and no WATCHDOG=1", msg)
	}
}

func TestNotifySystemdNoSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000")
	stop := notifySystemd(t.Context(), zerolog.Nop(), "ok")
	stop() // returns at once: there is no goroutine to join
}

func TestNotifySystemdSocketGoneIsNotFatal(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "nobody-listens"))
	t.Setenv("WATCHDOG_USEC", "1000")
	var logs syncBuffer
	stop := notifySystemd(t.Context(), zerolog.New(&logs), "ok")
	stop()
	if n := strings.Count(logs.String(), "cannot notify systemd"); n != 1 {
		t.Errorf("logged %d notify failures, want 1 (once per episode):\n%s", n, logs.String())
	}
}

// TestServeNotifiesSystemd runs the daemon as systemd would start it
// (NOTIFY_SOCKET and WATCHDOG_USEC set) and checks the whole sequence.
func TestServeNotifiesSystemd(t *testing.T) {
	sock := listenNotifySocket(t)
	t.Setenv("WATCHDOG_USEC", "30000000") // WatchdogSec=30s as in the unit
	t.Setenv("WATCHDOG_PID", "")
	d := startDaemon(t)

	msg, _ := sock.expect("READY=1")
	if !hasLine(msg, "STATUS=serving 4 profiles on "+d.addr) {
		t.Errorf("READY message = %q, want STATUS= with the profile count and address", msg)
	}
	sock.expect("WATCHDOG=1") // the first ping is sent at once
	d.stop()
	d.stop = nil
	sock.expect("STOPPING=1")
}
