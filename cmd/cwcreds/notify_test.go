package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
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

// notifySystemd starts serve's notifier through $NOTIFY_SOCKET with a
// STATUS= that never changes.
func notifySystemd(ctx context.Context, log zerolog.Logger, status string) (stop func()) {
	return newNotifier(log, nil).start(ctx, func() string { return status }, watchdogInterval(log), statusPollInterval)
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
	if !regexp.MustCompile(`(?m)^STATUS=[0-4]/4 profiles ready on ` + regexp.QuoteMeta(d.addr)).MatchString(msg) {
		t.Errorf("READY message = %q, want STATUS= with the profiles ready and the address", msg)
	}
	sock.expect("WATCHDOG=1") // the first ping is sent at once
	// Once every profile has its key, STATUS= says so.
	if all := "STATUS=4/4 profiles ready on " + d.addr; !hasLine(msg, all) {
		sock.expect(all)
	}
	d.stop()
	d.stop = nil
	sock.expect("STOPPING=1")
}

// fakeManager records the sd_notify messages a notifier sends, failing
// while fail is set.
type fakeManager struct {
	mu   sync.Mutex
	msgs []string
	fail bool
}

func (f *fakeManager) send(state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("connect: no such file or directory")
	}
	f.msgs = append(f.msgs, state)
	return nil
}

func (f *fakeManager) setFail(fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

// sent returns the messages so far.
func (f *fakeManager) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.msgs)
}

// statuses returns the STATUS= values of the messages so far.
func (f *fakeManager) statuses() []string {
	var out []string
	for _, m := range f.sent() {
		for l := range strings.SplitSeq(m, "\n") {
			if v, ok := strings.CutPrefix(l, "STATUS="); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// TestNotifierStatusFollowsReadiness runs the real cache in a synctest
// bubble: STATUS= names the profile failing upstream and its reason, turns
// to "2/2 profiles ready" once it recovers, and is not sent again while
// nothing changes.
func TestNotifierStatusFollowsReadiness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var upstreamOK atomic.Bool
		mint := func(ok func() bool) cwapi.Minter {
			return cwapi.MinterFunc(func(context.Context) (*cwapi.Credentials, error) {
				if !ok() {
					return nil, errors.New("upstream rejected the API access token (HTTP 401)")
				}
				return &cwapi.Credentials{AccessKeyID: "CWKEY" + randomHex(4), SecretAccessKey: "CW-SECRET-" + randomHex(8),
					Expires: time.Now().Add(time.Hour)}, nil
			})
		}
		cache, err := broker.NewCache([]broker.CacheProfile{
			{Name: "good", Source: cwapi.SourceAccessKey, Minter: mint(func() bool { return true })},
			{Name: "ingest", Source: cwapi.SourceAccessKey, Minter: mint(upstreamOK.Load)},
		}, func(o *broker.CacheOptions) { o.Rand = func() float64 { return 0.5 } })
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { cache.Run(ctx) })

		mgr := &fakeManager{}
		n := newNotifier(zerolog.Nop(), mgr.send)
		const addr = "127.0.0.1:7911"
		stop := n.start(ctx, func() string { return readinessStatus(addr, cache.Status()) }, 0, statusPollInterval)
		if msgs := mgr.sent(); len(msgs) != 1 || !hasLine(msgs[0], "READY=1") {
			t.Fatalf("first messages = %q, want READY=1", msgs)
		}

		time.Sleep(statusPollInterval + statusPollInterval/2)
		synctest.Wait()
		st := mgr.statuses()
		last := st[len(st)-1]
		if !strings.HasPrefix(last, `1/2 profiles ready on `+addr+`; "ingest" has no valid key: `) ||
			!strings.Contains(last, "minting a key failed") || strings.Contains(last, "upstream rejected the API access token") {
			t.Fatalf("STATUS=%q, want 1/2 ready and ingest's reason", last)
		}
		if strings.Contains(last, "CW-SECRET") || strings.ContainsAny(last, "\n") || len([]rune(last)) > maxStatusRunes {
			t.Errorf("STATUS=%q: must be one short line without secrets", last)
		}

		upstreamOK.Store(true)
		time.Sleep(10 * time.Minute) // past any retry backoff
		synctest.Wait()
		st = mgr.statuses()
		if want := "2/2 profiles ready on " + addr; st[len(st)-1] != want {
			t.Fatalf("after recovery STATUS=%q, want %q (all: %q)", st[len(st)-1], want, st)
		}
		for i := 1; i < len(st); i++ {
			if st[i] == st[i-1] {
				t.Errorf("STATUS=%q sent twice in a row", st[i])
			}
		}
		sentBefore := len(mgr.sent())
		time.Sleep(30 * statusPollInterval)
		synctest.Wait()
		if got := mgr.sent()[sentBefore:]; len(got) != 0 {
			t.Errorf("sent %q while nothing changed", got)
		}

		cancel()
		stop()
		wg.Wait()
		if msgs := mgr.sent(); !hasLine(msgs[len(msgs)-1], "STOPPING=1") {
			t.Errorf("last message %q, want STOPPING=1", msgs[len(msgs)-1])
		}
	})
}

func TestReadinessStatus(t *testing.T) {
	const addr = "127.0.0.1:7911"
	long := strings.Repeat("x", 500)
	tests := []struct {
		name     string
		profiles []broker.Status
		want     string
	}{
		{"none", nil, "0/0 profiles ready on " + addr},
		{"all", []broker.Status{{Profile: "a", Healthy: true}, {Profile: "b", Healthy: true}}, "2/2 profiles ready on " + addr},
		{"first failing named", []broker.Status{
			{Profile: "a", Healthy: true},
			{Profile: "b", Reason: `profile "b" has no valid key: upstream said 403 (next upstream attempt at 2026-01-01T00:00:00Z)`},
			{Profile: "c", Reason: "no key minted yet"},
		}, `1/3 profiles ready on ` + addr + `; "b" has no valid key: upstream said 403 (next upstream attempt at 2026-01-01T00:00:00Z)`},
		{"other reason", []broker.Status{{Profile: "c", Reason: "no key minted yet"}}, `0/1 profiles ready on ` + addr + `; "c": no key minted yet`},
		{"one line", []broker.Status{{Profile: "c", Reason: "line one\nline two"}}, `0/1 profiles ready on ` + addr + `; "c": line one line two`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := readinessStatus(addr, tc.profiles); got != tc.want {
				t.Errorf("readinessStatus = %q, want %q", got, tc.want)
			}
		})
	}
	got := readinessStatus(addr, []broker.Status{{Profile: "c", Reason: long}})
	if n := len([]rune(got)); n != maxStatusRunes || !strings.HasSuffix(got, "…") {
		t.Errorf("long reason: %d runes %q, want %d ending in …", n, got, maxStatusRunes)
	}
}

// duplicateKeys returns every key that the JSON value line, or any
// object in it, holds twice. encoding/json keeps the last value silently,
// so it walks the tokens itself.
func duplicateKeys(line string) ([]string, error) {
	type frame struct {
		object, wantKey bool
		keys            map[string]bool
	}
	var dups []string
	var stack []*frame
	dec := json.NewDecoder(strings.NewReader(line))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return dups, nil
		}
		if err != nil {
			return nil, err
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			if key, ok := tok.(string); ok { // else the object's closing '}'
				top := stack[n-1]
				if top.keys[key] {
					dups = append(dups, key)
				}
				top.keys[key], top.wantKey = true, false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, wantKey: true, keys: map[string]bool{}})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: the enclosing object wants its next key.
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
}

func TestDuplicateKeys(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{`{"a":1,"b":{"a":2,"c":[{"a":3},{"a":4}]},"d":"x","e":{},"f":[]}`, nil},
		{`{"level":"debug","message":"ready","message":"notified systemd"}`, []string{"message"}},
		{`{"a":{"x":1,"x":[1,{"y":2}]},"b":[{"z":1,"z":2}]}`, []string{"x", "z"}},
	}
	for _, tc := range tests {
		got, err := duplicateKeys(tc.line)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("duplicateKeys(%s) = %q, %v; want %q", tc.line, got, err, tc.want)
		}
	}
}

// TestNotifierLogLinesHaveUniqueKeys: every line the notifier logs (sent,
// failing, recovered, for every kind of message) is a JSON object with no
// key twice; zerolog's Msg writes "message", so a field must not.
func TestNotifierLogLinesHaveUniqueKeys(t *testing.T) {
	var logs syncBuffer
	mgr := &fakeManager{}
	n := newNotifier(zerolog.New(&logs).Level(zerolog.DebugLevel), mgr.send)
	n.ready("0/1 profiles ready on 127.0.0.1:7911")
	n.setStatus("1/1 profiles ready on 127.0.0.1:7911")
	n.reloading(12345)
	mgr.setFail(true)
	n.notify("watchdog", "WATCHDOG=1")
	n.ready("1/1 profiles ready on 127.0.0.1:7911")
	mgr.setFail(false)
	n.notify("watchdog", "WATCHDOG=1")
	n.stopping()

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for _, want := range []string{"notified systemd", "cannot notify systemd", "notifying systemd works again"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q line logged:\n%s", want, logs.String())
		}
	}
	for _, l := range lines {
		if dups, err := duplicateKeys(l); err != nil || len(dups) > 0 {
			t.Errorf("log line %s: duplicate keys %q (%v)", l, dups, err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if _, ok := m["notify"]; !ok {
			t.Errorf("line lacks the notify field: %s", l)
		}
	}
}

// TestNotifierReloading: a reload is framed by RELOADING=1 with
// MONOTONIC_USEC= (as Type=notify-reload requires) and READY=1.
func TestNotifierReloading(t *testing.T) {
	mgr := &fakeManager{}
	n := newNotifier(zerolog.Nop(), mgr.send)
	started, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	n.reloading(started)
	n.ready("1/1 profiles ready on 127.0.0.1:7911")
	msgs := mgr.sent()
	if len(msgs) != 2 || !hasLine(msgs[0], "RELOADING=1") || !hasLine(msgs[0], "MONOTONIC_USEC="+strconv.FormatInt(started, 10)) ||
		!hasLine(msgs[1], "READY=1") || !hasLine(msgs[1], "STATUS=1/1 profiles ready on 127.0.0.1:7911") {
		t.Errorf("messages = %q, want RELOADING=1 with MONOTONIC_USEC=%d, then READY=1 with the status", msgs, started)
	}
}
