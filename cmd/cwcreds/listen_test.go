package main

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// systemdSocket stands for cwcreds.socket: a listener the test (systemd)
// keeps open, and a fresh duplicate of it for each daemon start.
type systemdSocket struct{ ln *net.TCPListener }

func newSystemdSocket(t *testing.T) *systemdSocket {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &systemdSocket{ln.(*net.TCPListener)}
}

func (s *systemdSocket) pass(t *testing.T) []*os.File {
	t.Helper()
	f, err := s.ln.File()
	if err != nil {
		t.Fatal(err)
	}
	return []*os.File{f}
}

// TestSocketActivationHoldsPortAcrossRestart: with the socket systemd
// passes, stopping the daemon (SIGTERM, systemctl restart) leaves the port
// bound, so no one can take it, and a client connecting while no daemon
// runs is answered by the next one instead of failing.
func TestSocketActivationHoldsPortAcrossRestart(t *testing.T) {
	d := startDaemon(t)
	d.stop()
	d.stop = nil
	sock := newSystemdSocket(t)
	addr := sock.ln.Addr().String()
	d.cfg.ListenAddr = addr

	d.run(t, serveHooks{inherited: sock.pass(t)})
	if d.addr != addr {
		t.Fatalf("daemon serves on %s, want the passed socket %s", d.addr, addr)
	}
	if code, body := d.get(t, "train", d.tokens["train"]); code != http.StatusOK {
		t.Fatalf("GET through the passed socket = %d %v", code, body)
	}
	d.stop() // SIGTERM
	d.stop = nil

	// A squatter polling bind() between the two daemons finds the port taken.
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("after the daemon stopped, %s could be bound by anyone: the socket was closed", addr)
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind %s after stop: %v, want EADDRINUSE", addr, err)
	}
	// A client connecting now is queued, not refused.
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("connect while no daemon runs: %v (the socket must queue connections)", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}

	d.run(t, serveHooks{inherited: sock.pass(t)}) // the restarted daemon
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("the queued connection got %q, %v; want the restarted daemon's 200", line, err)
	}
	d.stop()
	d.stop = nil // every run's cleanup calls d.stop
}

// TestSocketActivationMismatch: a passed socket on another address than
// CWCREDS_LISTEN_ADDR is a configuration error naming both, not a daemon
// quietly binding the configured address itself.
func TestSocketActivationMismatch(t *testing.T) {
	sock := newSystemdSocket(t)
	_, err := listen("127.0.0.1:7911", sock.pass(t))
	if err != nil && !strings.Contains(err.Error(), "127.0.0.1:7911") {
		t.Errorf("error %q does not name the configured address", err)
	}
	var ue *usageError
	if !errors.As(err, &ue) {
		t.Fatalf("listen with a mismatched passed socket = %v, want a configuration error", err)
	}
	for _, want := range []string{sock.ln.Addr().String(), "CWCREDS_LISTEN_ADDR is 127.0.0.1:7911", "systemctl edit cwcreds.socket"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// Two sockets, or something that is not a listening socket, are refused.
	if _, err := listen(sock.ln.Addr().String(), append(sock.pass(t), sock.pass(t)...)); !errors.As(err, &ue) {
		t.Errorf("two passed sockets: %v, want a configuration error", err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listen(sock.ln.Addr().String(), []*os.File{f}); !errors.As(err, &ue) || !strings.Contains(err.Error(), "not a listening socket") {
		t.Errorf("a passed non-socket: %v, want a configuration error", err)
	}
}

func TestSameAddr(t *testing.T) {
	for _, tc := range []struct {
		want, got string
		ok        bool
	}{
		{"127.0.0.1:791", "127.0.0.1:791", true},
		{"127.0.0.1:791", "127.0.0.1:7911", false},
		{"127.0.0.1:791", "127.0.0.2:791", false},
		{"[::1]:791", "[::1]:791", true},
		{"[::ffff:127.0.0.1]:791", "127.0.0.1:791", true},
		{":791", "0.0.0.0:791", true},
		{":791", "127.0.0.1:791", false},
	} {
		got := netipMust(t, tc.got)
		if sameAddr(tc.want, got) != tc.ok {
			t.Errorf("sameAddr(%s, %s) = %v, want %v", tc.want, tc.got, !tc.ok, tc.ok)
		}
	}
}

func netipMust(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// TestListenSeveral: every address of the list gets a listener, in order,
// and the merged listener accepts on all of them, each connection keeping
// the address it was made to.
func TestListenSeveral(t *testing.T) {
	lns, err := listen("127.0.0.1:0, [::1]:0", nil)
	if err != nil {
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Skipf("no IPv6 loopback here: %v", err)
		}
		t.Fatal(err)
	}
	if len(lns) != 2 || !strings.HasPrefix(lns[0].Addr().String(), "127.0.0.1:") || !strings.HasPrefix(lns[1].Addr().String(), "[::1]:") {
		t.Fatalf("listeners %s, want 127.0.0.1 then [::1]", listenAddrs(lns))
	}
	m, err := mergeListeners(lns)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, ln := range lns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, err := m.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got.LocalAddr().String() != ln.Addr().String() {
			t.Errorf("accepted a connection to %s, want %s", got.LocalAddr(), ln.Addr())
		}
		got.Close()
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := m.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	for _, ln := range lns {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Close", ln.Addr())
		}
	}
}

// TestListenAddressNotAssigned: a pod identity address this machine does
// not have is named, with why and what to do, and the addresses already
// bound are released.
func TestListenAddressNotAssigned(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := probe.Addr().String()
	probe.Close()
	_, err = listen(free+",169.254.170.23:7911", nil)
	if err == nil {
		t.Skip("169.254.170.23 is assigned on this machine")
	}
	if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("listen = %v, want EADDRNOTAVAIL", err)
	}
	for _, want := range []string{"listen on 169.254.170.23:7911 (CWCREDS_LISTEN_ADDR)",
		"the address is not assigned to any interface on this node", "Pods on Kubernetes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	ln, err := net.Listen("tcp", free)
	if err != nil {
		t.Fatalf("the loopback address bound before the failure was not released: %v", err)
	}
	ln.Close()
}

// TestListenInUse names the address taken by another process.
func TestListenInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = listen(taken.Addr().String(), nil)
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "another process listens there") {
		t.Errorf("listen on a taken address = %v, want EADDRINUSE with a hint", err)
	}
}

// TestSocketActivationSeveral: the sockets systemd passes are matched to
// CWCREDS_LISTEN_ADDR by address, whatever their order, and an address
// without a socket is a configuration error naming it.
func TestSocketActivationSeveral(t *testing.T) {
	a, b := newSystemdSocket(t), newSystemdSocket(t)
	list := a.ln.Addr().String() + "," + b.ln.Addr().String()
	lns, err := listen(list, append(b.pass(t), a.pass(t)...))
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(lns)
	if len(lns) != 2 || lns[0].Addr().String() != a.ln.Addr().String() || lns[1].Addr().String() != b.ln.Addr().String() || !lns[0].activated || !lns[1].activated {
		t.Fatalf("listeners %s, want %s, both activated", listenAddrs(lns), list)
	}
	_, err = listen(list, a.pass(t))
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "systemd passed no socket for "+b.ln.Addr().String()) {
		t.Errorf("one socket for two addresses: %v, want a configuration error naming %s", err, b.ln.Addr())
	}
}

// TestMergedCloseLeavesQueuedConnections: the merged listener accepts a
// connection only when the server asks for one, so closing it (SIGTERM,
// `systemctl restart`) leaves every connection the server did not take in
// the passed socket's queue, for the next daemon; none is accepted ahead and
// then dropped, which a client saw as an empty reply (curl 000) during a
// restart. Repeated, because before the fix the loss depended on which
// goroutine ran first.
func TestMergedCloseLeavesQueuedConnections(t *testing.T) {
	for i := range 50 {
		sock := newSystemdSocket(t)
		addr := sock.ln.Addr().String()
		lns, err := listen(addr, sock.pass(t))
		if err != nil {
			t.Fatal(err)
		}
		m, err := mergeListeners(lns)
		if err != nil {
			t.Fatal(err)
		}
		var clients []net.Conn
		for range 3 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			clients = append(clients, c)
		}
		// The server takes one connection, then the daemon stops.
		got, err := m.Accept()
		if err != nil {
			t.Fatal(err)
		}
		got.Close()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		// The next daemon finds the other two, alive, in the socket's queue.
		if err := sock.ln.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		for n := range 2 {
			next, err := sock.ln.Accept()
			if err != nil {
				t.Fatalf("round %d: queued connection %d of 2 is gone after Close: %v (accepted ahead and dropped)", i, n+1, err)
			}
			if _, err := next.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			next.Close()
		}
		for n, c := range clients[1:] {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != nil {
				t.Fatalf("round %d: client %d: %v, want the next daemon's byte", i, n+2, err)
			}
		}
	}
}
