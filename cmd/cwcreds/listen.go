package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/cwcreds/cwcreds/config"
)

// listener is where the daemon accepts connections, and whether systemd
// handed it over.
type listener struct {
	net.Listener
	// activated: the socket came from systemd (cwcreds.socket). systemd
	// keeps its own descriptor, so closing ours at shutdown leaves the
	// socket listening: connections queue until the next daemon accepts
	// them, and no one else can bind the port meanwhile.
	activated bool
}

// systemdFiles returns the sockets systemd passed (LISTEN_PID, LISTEN_FDS),
// and unsets those variables so no child inherits them.
func systemdFiles() []*os.File { return activation.Files(true) }

// listen returns the daemon's listeners, one for each address of list
// (CWCREDS_LISTEN_ADDR, comma-separated, validated), in its order.
//
// With socket activation (inherited non-empty) the socket unit is where the
// sockets come from: each must be a listening TCP socket bound to one of
// the addresses, and every address must have one. Any mismatch is a
// configuration error naming both sides, because clients find the daemon
// through CWCREDS_LISTEN_ADDR and a daemon that quietly bound an address
// itself would give up what socket activation is for (the port held across
// restarts, no capability). Without it the daemon binds every address
// itself; a failure names the address and why (see bindHint), and closes
// what was bound.
func listen(list string, inherited []*os.File) ([]*listener, error) {
	addrs := (&config.Config{ListenAddr: list}).ListenAddrs()
	if len(addrs) == 0 {
		return nil, &usageError{errors.New("CWCREDS_LISTEN_ADDR lists no address; set e.g. 127.0.0.1:791")}
	}
	if len(inherited) == 0 {
		lns := make([]*listener, 0, len(addrs))
		for _, addr := range addrs {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				closeAll(lns)
				return nil, fmt.Errorf("listen on %s (CWCREDS_LISTEN_ADDR): %w%s", addr, err, bindHint(addr, err))
			}
			lns = append(lns, &listener{Listener: ln})
		}
		return lns, nil
	}
	defer func() {
		for _, f := range inherited {
			f.Close() // net.FileListener dups what it keeps
		}
	}()
	lns := make([]*listener, len(addrs))
	fail := func(err error) ([]*listener, error) {
		closeAll(lns)
		return nil, &usageError{err}
	}
	for _, f := range inherited {
		ln, err := activatedListener(f, list)
		if err != nil {
			return fail(err)
		}
		got := ln.Addr().(*net.TCPAddr).AddrPort()
		i := slices.IndexFunc(addrs, func(a string) bool { return sameAddr(a, got) })
		switch {
		case i < 0:
			ln.Close()
			return fail(fmt.Errorf("the socket systemd passed listens on %s (cwcreds.socket ListenStream=) but CWCREDS_LISTEN_ADDR is %s; "+
				"make them the same: change CWCREDS_LISTEN_ADDR, or the socket with `systemctl edit cwcreds.socket` "+
				"([Socket], an empty ListenStream= line, then one ListenStream= line for each of %s) and `systemctl restart cwcreds.socket cwcreds`",
				got, list, list))
		case lns[i] != nil:
			ln.Close()
			return fail(fmt.Errorf("systemd passed two sockets on %s (LISTEN_FDS); give cwcreds.socket one ListenStream= line per address", got))
		}
		lns[i] = &listener{Listener: ln, activated: true}
	}
	for i, ln := range lns {
		if ln == nil {
			return fail(fmt.Errorf("systemd passed no socket for %s, which CWCREDS_LISTEN_ADDR lists (%s): add ListenStream=%s to "+
				"cwcreds.socket with `systemctl edit cwcreds.socket` (and FreeBind=yes if the address is assigned after boot), "+
				"or remove it from CWCREDS_LISTEN_ADDR",
				addrs[i], list, addrs[i]))
		}
	}
	return lns, nil
}

// listenMetrics binds the metrics-only listener on addr
// (CWCREDS_METRICS_LISTEN_ADDR, validated). It is always a plain bind, with
// or without socket activation: it serves no credential, so nothing is
// lost if someone else takes its port while the daemon is down, and
// cwcreds.socket has no line for it. A failure names the variable, the
// address and what to do.
func listenMetrics(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (CWCREDS_METRICS_LISTEN_ADDR): %w%s", addr, err, metricsBindHint(err))
	}
	return ln, nil
}

// metricsBindHint says, after a failure to bind the metrics listener with
// err, why and what to do; "" when there is nothing to add.
func metricsBindHint(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "; the address is not assigned to any interface on this node: use one of the node's own addresses " +
			"(the Helm chart uses the node's IP, $(HOST_IP)) or 0.0.0.0, or unset CWCREDS_METRICS_LISTEN_ADDR"
	case errors.Is(err, syscall.EADDRINUSE):
		return "; another process listens there: choose another port for CWCREDS_METRICS_LISTEN_ADDR"
	case errors.Is(err, syscall.EACCES):
		return "; ports below 1024 need CAP_NET_BIND_SERVICE, and the metrics listener is never socket-activated: " +
			"use an unprivileged port such as 7913"
	}
	return ""
}

// activatedListener returns the listener of a socket systemd passed, which
// must be a listening TCP socket; list is CWCREDS_LISTEN_ADDR, for errors.
func activatedListener(f *os.File, list string) (net.Listener, error) {
	if v, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return nil, fmt.Errorf("the descriptor systemd passed (%s) is not a listening socket: "+
			"cwcreds.socket needs ListenStream= lines for %s and Accept=no", f.Name(), list)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the socket systemd passed (%s): %w", f.Name(), err)
	}
	if _, ok := ln.Addr().(*net.TCPAddr); !ok {
		ln.Close()
		return nil, fmt.Errorf("the socket systemd passed listens on %s %s, not TCP: cwcreds.socket needs ListenStream= lines for %s",
			ln.Addr().Network(), ln.Addr(), list)
	}
	return ln, nil
}

// bindHint says, after a failure to bind addr with err, why and what to do;
// "" when there is nothing to add.
func bindHint(addr string, err error) string {
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "; the address is not assigned to any interface on this node: assign it first " +
			"(for a pod identity address such as 169.254.170.23: `ip link add cwcreds0 type dummy; ip addr add 169.254.170.23/32 dev cwcreds0`, " +
			"which the Helm chart's init container does; see README, Pods on Kubernetes), or remove it from CWCREDS_LISTEN_ADDR"
	case errors.Is(err, syscall.EADDRINUSE):
		return "; another process listens there (a previous cwcreds still draining, or another agent such as the EKS Pod Identity Agent): " +
			"stop it, or choose another port"
	case errors.Is(err, syscall.EACCES):
		return "; ports below 1024 need CAP_NET_BIND_SERVICE: run it under systemd with cwcreds.socket " +
			"(the socket unit binds the port and passes it on), grant the capability, " +
			"or set an unprivileged port (e.g. 127.0.0.1:7911, which another local user can take while the daemon is down)"
	}
	return ""
}

// closeAll closes the non-nil listeners of lns.
func closeAll(lns []*listener) {
	for _, ln := range lns {
		if ln != nil {
			ln.Close()
		}
	}
}

// sameAddr reports whether a socket bound to got is what the listen address
// want (a validated CWCREDS_LISTEN_ADDR) asks for.
func sameAddr(want string, got netip.AddrPort) bool {
	host, port, err := net.SplitHostPort(want)
	if err != nil {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || uint16(p) != got.Port() {
		return false
	}
	if host == "" {
		return got.Addr().IsUnspecified()
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap() == got.Addr().Unmap()
}

// merged accepts the connections of several listeners as one, so one
// http.Server and one connection limiter (server.LimitConnections) serve
// every address: the limits count connections across all of them. A
// connection keeps its own LocalAddr, which is how the server tells the
// listeners apart (the Host guard, who may use what).
//
// It accepts a connection only when Accept is called, never ahead: a
// goroutine per listener waits until the listener has a connection
// queued (without taking it), and Accept then takes it. So closing merged
// (at shutdown) leaves every connection the server has not taken in the
// kernel's queue: with socket activation the next daemon accepts it,
// where a connection accepted ahead would have been closed unanswered
// (curl's "empty reply", 000, during `systemctl restart`).
type merged struct {
	lns []*listener
	// polls[i] is a duplicate of lns[i]'s descriptor, which the runtime's
	// poller can wait on (a listener's own cannot be read from).
	polls  []*os.File
	ready  chan acceptable
	done   chan struct{}
	closed sync.Once
}

// acceptable is a listener with a connection queued (err nil), or the
// error waiting for one returned. taken is the watching goroutine's: Accept
// signals it once it has accepted, so the same queued connection is not
// reported twice.
type acceptable struct {
	ln    *listener
	err   error
	taken chan struct{}
}

// mergeListeners starts watching every listener of lns. On an error it
// closes nothing: the caller still owns lns.
func mergeListeners(lns []*listener) (*merged, error) {
	m := &merged{lns: lns, ready: make(chan acceptable), done: make(chan struct{})}
	for _, ln := range lns {
		f, err := pollFile(ln)
		if err != nil {
			for _, f := range m.polls {
				f.Close()
			}
			return nil, err
		}
		m.polls = append(m.polls, f)
	}
	for i, ln := range lns {
		go m.watch(ln, m.polls[i])
	}
	return m, nil
}

// pollFile duplicates ln's descriptor (non-blocking, as the listener's is)
// into a file the runtime's poller waits on.
func pollFile(ln *listener) (*os.File, error) {
	sc, ok := ln.Listener.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listener on %s: %T has no descriptor to poll", ln.Addr(), ln.Listener)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listener on %s: %w", ln.Addr(), err)
	}
	dup, dupErr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("listener on %s: %w", ln.Addr(), err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("listener on %s: dup: %w", ln.Addr(), dupErr)
	}
	return os.NewFile(uintptr(dup), "listener "+ln.Addr().String()), nil
}

// watch reports to Accept, one at a time, each time ln has a connection
// queued, and the errors waiting for one: after an error it waits for the
// next Accept call, which http.Server makes only after its back-off, so a
// failing listener cannot spin. It ends when m is closed.
func (m *merged) watch(ln *listener, poll *os.File) {
	taken := make(chan struct{}, 1)
	for {
		err := waitAcceptable(poll)
		select {
		case <-m.done:
			return
		default:
		}
		select {
		case m.ready <- acceptable{ln: ln, err: err, taken: taken}:
		case <-m.done:
			return
		}
		if err != nil {
			continue
		}
		select {
		case <-taken:
		case <-m.done:
			return
		}
	}
}

// waitAcceptable returns once the listening socket poll refers to has a
// connection queued, leaving it there. It waits in the runtime's poller,
// so closing poll ends it.
func waitAcceptable(poll *os.File) error {
	rc, err := poll.SyscallConn()
	if err != nil {
		return err
	}
	var pollErr error
	err = rc.Read(func(fd uintptr) bool {
		// poll(2) without waiting: true when a connection is queued;
		// false makes Read wait until the socket is readable, then ask again.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			return false
		}
		if err != nil {
			pollErr = fmt.Errorf("poll %s: %w", poll.Name(), err)
			return true
		}
		return n > 0
	})
	if err != nil {
		return fmt.Errorf("wait on %s: %w", poll.Name(), err)
	}
	return pollErr
}

// Accept returns the next connection of any listener.
func (m *merged) Accept() (net.Conn, error) {
	select {
	case a := <-m.ready:
		if a.err != nil {
			return nil, a.err
		}
		c, err := a.ln.Accept()
		a.taken <- struct{}{} // buffered: the watcher waits for it
		return c, err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

// Close closes every listener (a socket systemd passed stays open in
// systemd, see listener), leaving the connections queued on it there.
func (m *merged) Close() error {
	var errs []error
	m.closed.Do(func() {
		close(m.done)
		for i, ln := range m.lns {
			errs = append(errs, ln.Close())
			m.polls[i].Close() // ends its watcher's wait
		}
	})
	return errors.Join(errs...)
}

// Addr is the first listener's address.
func (m *merged) Addr() net.Addr { return m.lns[0].Addr() }

// listenAddrs lists the bound addresses of lns, comma-separated.
func listenAddrs(lns []*listener) string {
	s := make([]string, len(lns))
	for i, ln := range lns {
		s[i] = ln.Addr().String()
	}
	return strings.Join(s, ",")
}
