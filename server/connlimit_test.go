package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The helper process: the test binary re-executed as another user runs
// TestConnLimitHelper, which does what envHelper says and exits.
const (
	envHelper     = "CWCREDS_CONNLIMIT_TEST_HELPER"
	envHelperAddr = "CWCREDS_CONNLIMIT_TEST_ADDR"
	envHelperN    = "CWCREDS_CONNLIMIT_TEST_N"
	nobodyUID     = 65534
)

// TestConnLimitHelper is not a test: it is the attacker's process.
//
//	flood: wait for a line on stdin; open N keep-alive connections, one
//	request each (so the server holds them idle, as an attacker would);
//	print "ready OK" with how many got a 200; wait for stdin to close.
//	imds: PUT N session tokens with the maximum TTL over one connection;
//	print "ready OK".
func TestConnLimitHelper(t *testing.T) {
	mode := os.Getenv(envHelper)
	if mode == "" {
		t.Skip("helper process only")
	}
	addr := os.Getenv(envHelperAddr)
	n, _ := strconv.Atoi(os.Getenv(envHelperN))
	deadline := time.Now().Add(20 * time.Second) // every helper is bounded
	in := bufio.NewReader(os.Stdin)
	switch mode {
	case "flood":
		_, _ = in.ReadString('\n')
		var conns []net.Conn
		ok := 0
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				continue
			}
			conns = append(conns, c)
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.WriteString(c, "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
				continue
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok++
			}
		}
		fmt.Printf("ready %d\n", ok)
		_, _ = io.Copy(io.Discard, in) // hold every connection until told
		for _, c := range conns {
			c.Close()
		}
	case "imds":
		c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}
		ok := 0
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			req, _ := http.NewRequest(http.MethodPut, "http://"+addr+imdsTokenPath, nil)
			req.Header.Set(hdrIMDSTTL, strconv.Itoa(imdsMaxTTL))
			resp, err := c.Do(req)
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok++
			}
		}
		fmt.Printf("ready %d\n", ok)
	}
	os.Exit(0)
}

// helperBinary copies the test binary where uid 65534 can run it.
func helperBinary(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the attacker as uid 65534; CI runs as root")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// helper is a running attacker process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startHelper starts the helper as uid 65534 in mode against addr.
func startHelper(t *testing.T, bin, mode, addr string, n int) *helper {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^TestConnLimitHelper$")
	cmd.Env = []string{envHelper + "=" + mode, envHelperAddr + "=" + addr, envHelperN + "=" + strconv.Itoa(n)}
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		h.stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return h
}

// ready waits for the helper's "ready N" line and returns N.
func (h *helper) ready(t *testing.T) int {
	t.Helper()
	line, err := h.out.ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v (read %q)", err, line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	if err != nil {
		t.Fatalf("helper said %q", line)
	}
	return n
}

// startLimitedServer serves h on a loopback port with LimitConnections,
// as the daemon does, and returns its address and limiter.
func startLimitedServer(t *testing.T, h http.Handler, limits ConnLimits) (string, *connLimiter) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(ln.Addr().String(), h, zerolog.Nop())
	limited := LimitConnections(srv, ln, limits, zerolog.Nop())
	done := make(chan struct{})
	go func() { _ = srv.Serve(limited); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String(), limited.(*connLimiter)
}

// TestConnectionFloodLeavesOthersServed is finding 4 of issue 11: one
// user opening connections and keeping them alive used to exhaust the
// daemon's fds, so other users' connections were never accepted. Here
// the server runs with few fds (RLIMIT_NOFILE lowered for the test), uid
// 65534 opens far more keep-alive connections than the per-peer limit and
// the fds left, and root's client must still get a 200 within a bound.
func TestConnectionFloodLeavesOthersServed(t *testing.T) {
	bin := helperBinary(t)
	limits := ConnLimits{Total: 32, PerPeer: 16}
	addr, l := startLimitedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}), limits)
	const flood = 200
	h := startHelper(t, bin, "flood", addr, flood)

	// Lower this process's fd limit only now: the helper has its own.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	open, _ := os.ReadDir("/proc/self/fd")
	lim := syscall.Rlimit{Cur: uint64(len(open) + 48), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })

	_, _ = io.WriteString(h.stdin, "go\n")
	served := h.ready(t)

	// Another user's client, while the flood's connections are held open.
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 3 * time.Second}
	start := time.Now()
	resp, err := c.Get("http://" + addr + "/ping")
	if err != nil {
		t.Fatalf("root's request during uid %d's flood of %d connections: %v (after %s)", nobodyUID, flood, err, time.Since(start))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("root's request: %d", resp.StatusCode)
	}
	total, nobody := l.stats(peerKey{uid: nobodyUID, hasUID: true})
	t.Logf("flood: %d/%d connections got a 200; server holds %d of uid %d's, %d in all; root served in %s",
		served, flood, nobody, nobodyUID, total, time.Since(start))
	if nobody > limits.PerPeer || total > limits.Total {
		t.Errorf("server holds %d connections of the flooder, %d in all; want at most %d and %d", nobody, total, limits.PerPeer, limits.Total)
	}
}

// TestIMDSFloodFromOtherUserKeepsToken is finding 6 with real processes:
// uid 65534 PUTs more session tokens than the whole store holds, with the
// maximum TTL; root's token, issued first, still works.
func TestIMDSFloodFromOtherUserKeepsToken(t *testing.T) {
	bin := helperBinary(t)
	s := newIMDSServer(t, &fakeKeys{creds: testCreds()})
	addr, _ := startLimitedServer(t, s, DefaultConnLimits)
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}
	do := func(method, path string, hdr ...string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, tok := do(http.MethodPut, imdsTokenPath, hdrIMDSTTL, strconv.Itoa(imdsMaxTTL))
	if code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, tok)
	}
	const flood = imdsMaxTokens + 4
	start := time.Now()
	h := startHelper(t, bin, "imds", addr, flood)
	if n := h.ready(t); n != flood {
		t.Fatalf("the flooder got %d of %d tokens; the test proves nothing", n, flood)
	}
	t.Logf("uid %d PUT %d tokens in %s", nobodyUID, flood, time.Since(start))
	if code, body := do(http.MethodGet, imdsCredsPath+"/"+testProfile, hdrIMDSToken, tok); code != http.StatusOK {
		t.Fatalf("root's session token after uid %d's flood: %d %s; want it still valid", nobodyUID, code, body)
	}
}

// pipeConn returns one end of a pipe (the other is closed at cleanup).
func pipeConn(t *testing.T) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}

// TestConnLimiterPolicy checks whom admit displaces and when it refuses.
func TestConnLimiterPolicy(t *testing.T) {
	l := newConnLimiter(nil, ConnLimits{Total: 6, PerPeer: 3}, nil, zerolog.Nop())
	a, b, c := peerKey{uid: 1, hasUID: true}, peerKey{uid: 2, hasUID: true}, peerKey{uid: 3, hasUID: true}
	admit := func(k peerKey) (*limitedConn, *limitedConn) {
		t.Helper()
		return l.admit(pipeConn(t), k)
	}
	a1, _ := admit(a)
	a2, _ := admit(a)
	a3, _ := admit(a)
	l.connState(a1, http.StateActive)
	l.connState(a2, http.StateActive)
	l.connState(a2, http.StateIdle) // a2 quiet since now, a3 quiet since accept
	// At the per-peer limit: the peer's longest-quiet connection goes.
	a4, victim := admit(a)
	if a4 == nil || victim != a3 {
		t.Fatalf("4th connection of a: admitted %v, displaced %p; want admitted, a3 (%p) displaced", a4 != nil, victim, a3)
	}
	l.connState(a2, http.StateActive)
	l.connState(a4, http.StateActive)
	// Every connection of a is in a request: refuse.
	if got, victim := admit(a); got != nil || victim != nil {
		t.Fatalf("connection of a with all busy: admitted %v; want refused", got != nil)
	}
	// Other peers are unaffected, up to the total.
	b1, _ := admit(b)
	b2, _ := admit(b)
	l.connState(b1, http.StateActive)
	c1, _ := admit(c)
	if b1 == nil || b2 == nil || c1 == nil {
		t.Fatal("other peers refused below the total")
	}
	// At the total (6): the largest peer with a quiet connection gives it:
	// a has 3 but none quiet, b has 2 with b2 quiet.
	c2, victim := admit(c)
	if c2 == nil || victim != b2 {
		t.Fatalf("at the total: admitted %v, displaced %p; want b2 (%p)", c2 != nil, victim, b2)
	}
	if total, ofA := l.stats(a); total != 6 || ofA != 3 {
		t.Errorf("stats = %d total, %d of a; want 6, 3", total, ofA)
	}
	// Closing releases once, and the peer is forgotten when it has none.
	for _, lc := range []*limitedConn{a1, a2, a4, b1, c1, c2} {
		lc.Close()
		lc.Close()
	}
	if total, _ := l.stats(a); total != 0 || len(l.peers) != 0 {
		t.Errorf("after closing all: total %d, %d peers; want 0, 0", total, len(l.peers))
	}
}

// TestConnLimiterRefusalAnswer: a refused connection reads a 503 JSON
// answer, not a silent reset.
func TestConnLimiterRefusalAnswer(t *testing.T) {
	inside, release := make(chan struct{}, 1), make(chan struct{})
	addr, _ := startLimitedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside <- struct{}{}
		<-release
	}), ConnLimits{Total: 1, PerPeer: 1})
	defer close(release)
	// Hold the only place with a connection in a request.
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, _ = io.WriteString(busy, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	<-inside
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("refused connection: %v; want a 503 answer", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), codeTooManyConnections) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("refused connection: %d %s %q", resp.StatusCode, resp.Header, b)
	}
}

// BenchmarkLoopbackNewConn is a warm GET on a new connection each time
// (dial, request, close), with and without LimitConnections: the accept
// path's cost, mostly the sock_diag uid lookup.
func BenchmarkLoopbackNewConn(b *testing.B) {
	for _, limited := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "limited"}[limited], func(b *testing.B) {
			h := New(zerolog.Nop(), &fakeKeys{creds: testCreds()}, Options{ClientTokens: map[string]string{testProfile: testToken}})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := NewHTTPServer("", h, zerolog.Nop())
			var serving net.Listener = ln
			if limited {
				serving = LimitConnections(srv, ln, DefaultConnLimits, zerolog.Nop())
			}
			go func() { _ = srv.Serve(serving) }()
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
			req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/credentials/"+testProfile, nil)
			req.Header.Set("Authorization", testToken)
			benchRoundTrips(b, client, req)
		})
	}
}
