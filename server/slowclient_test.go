package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Slow clients: each test stalls a connection where one of the server's
// time bounds (NewHTTPServer's, and the write bound of LimitConnections'
// connections) must end it. The bounds are shortened here (the defaults,
// checked by TestNewHTTPServer, are seconds); each test fails, with its
// client's own read timing out, if the bound it covers is removed.

const (
	slowBound  = 200 * time.Millisecond // every server bound in these tests
	slowWithin = 5 * time.Second        // the client's patience: far above slowBound
)

// startSlowServer serves h as the daemon does (newHTTPServer on
// LimitConnections' listener) with every bound slowBound, and returns its
// address and a channel receiving each connection the server closes.
func startSlowServer(t *testing.T, h http.Handler) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(ln.Addr().String(), h, zerolog.Nop(), httpTimeouts{readHeader: slowBound, body: slowBound, idle: time.Minute})
	closed := make(chan struct{}, 16)
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- struct{}{}
		}
	}
	limited := LimitConnections(srv, ln, DefaultConnLimits, zerolog.Nop())
	limited.(*connLimiter).writeTimeout = slowBound
	done := make(chan struct{})
	go func() { _ = srv.Serve(limited); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String(), closed
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readUntilClosed reads c until the server closes it and returns what it
// read; it fails the test if the client's own deadline (slowWithin) ends
// the wait first, i.e. the server kept the connection.
func readUntilClosed(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(slowWithin))
	start := time.Now()
	got, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server still holds the stalled connection after %s (read %q)", time.Since(start).Round(time.Millisecond), got)
	}
	return string(got)
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })

// TestSlowClientNeverFinishesHeaders: a client that sends part of its
// request line and headers and then nothing (Slowloris) is closed after
// the header bound, on a new connection and on a kept-alive one between
// requests.
func TestSlowClientNeverFinishesHeaders(t *testing.T) {
	addr, _ := startSlowServer(t, okHandler)
	t.Run("first request", func(t *testing.T) {
		c := dial(t, addr)
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
		readUntilClosed(t, c)
	})
	t.Run("after a request on the same connection", func(t *testing.T) {
		c := dial(t, addr)
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
		if got := readUntilClosed(t, c); !strings.HasPrefix(got, "HTTP/1.1 200 OK") || strings.Count(got, "HTTP/1.1") != 1 {
			t.Errorf("answers on the connection: %q; want the first request's 200 only", got)
		}
	})
}

// TestSlowClientNeverFinishesBody: a request announcing a body that never
// comes fails the handler's read after the body bound and the connection
// is closed.
func TestSlowClientNeverFinishesBody(t *testing.T) {
	readErr := make(chan error, 1)
	addr, _ := startSlowServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
		if err != nil {
			http.Error(w, "slow body", http.StatusRequestTimeout)
		}
	}))
	c := dial(t, addr)
	_, _ = io.WriteString(c, "POST /v1/admin/revoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789")
	readUntilClosed(t, c)
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("handler's body read: %v; want the deadline", err)
		}
	default:
		t.Error("the handler never ended its body read")
	}
}

// TestSlowClientNeverReads: a client that pipelines requests and never
// reads the answers fills the socket buffers; the server's blocked write
// fails after the write bound and the connection is closed.
func TestSlowClientNeverReads(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	addr, closed := startSlowServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, big)
	}))
	c := dial(t, addr)
	// 2,000 answers of 64 KiB are far more than loopback's socket buffers
	// hold; the requests themselves (~70 KB) fit in them. Written from a
	// goroutine, as a write may block until the server reads.
	go func() {
		req := "GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
		_, _ = io.WriteString(c, strings.Repeat(req, 2000))
	}()
	select {
	case <-closed:
	case <-time.After(slowWithin):
		t.Fatalf("server still writing to a client that never reads after %s", slowWithin)
	}
}

// TestSlowHandlerIsNotCutOff: the write bound counts a write, not the
// handler's wait (a client waiting on a cold key's mint must get its
// answer), and an armed deadline that expired while the connection waited
// does not fail the next answer.
func TestSlowHandlerIsNotCutOff(t *testing.T) {
	addr, _ := startSlowServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-time.After(3 * slowBound) // the handler's own wait, as on a mint
		}
		_, _ = io.WriteString(w, "ok")
	}))
	c := dial(t, addr)
	br := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(slowWithin))
	for _, path := range []string{"/fast", "/slow", "/fast"} {
		_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "ok" {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, b)
		}
	}
}
