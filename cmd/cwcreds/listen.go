package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
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

// listen returns the daemon's listener for addr (CWCREDS_LISTEN_ADDR).
//
// With socket activation (inherited non-empty) the socket unit is where the
// socket comes from, and it must be exactly one listening TCP socket bound
// to addr: any mismatch is a configuration error naming both, because
// clients find the daemon through CWCREDS_LISTEN_ADDR and a daemon that
// quietly bound addr itself would give up what socket activation is for
// (the port held across restarts, no capability). Without it the daemon
// binds addr itself.
func listen(addr string, inherited []*os.File) (*listener, error) {
	if len(inherited) == 0 {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			hint := ""
			if errors.Is(err, syscall.EACCES) {
				hint = "; ports below 1024 need CAP_NET_BIND_SERVICE: run it under systemd with cwcreds.socket " +
					"(the socket unit binds the port and passes it on), grant the capability, " +
					"or set an unprivileged port (e.g. 127.0.0.1:7911, which another local user can take while the daemon is down)"
			}
			return nil, fmt.Errorf("listen on %s (CWCREDS_LISTEN_ADDR): %w%s", addr, err, hint)
		}
		return &listener{Listener: ln}, nil
	}
	defer func() {
		for _, f := range inherited {
			f.Close() // net.FileListener dups what it keeps
		}
	}()
	if len(inherited) != 1 {
		return nil, &usageError{fmt.Errorf("systemd passed %d sockets (LISTEN_FDS); cwcreds takes exactly one: "+
			"give cwcreds.socket a single ListenStream=%s", len(inherited), addr)}
	}
	f := inherited[0]
	if v, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return nil, &usageError{fmt.Errorf("the descriptor systemd passed (%s) is not a listening socket: "+
			"cwcreds.socket needs ListenStream=%s and Accept=no", f.Name(), addr)}
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, &usageError{fmt.Errorf("the socket systemd passed (%s): %w", f.Name(), err)}
	}
	got, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		ln.Close()
		return nil, &usageError{fmt.Errorf("the socket systemd passed listens on %s %s, not TCP: cwcreds.socket needs ListenStream=%s",
			ln.Addr().Network(), ln.Addr(), addr)}
	}
	if !sameAddr(addr, got.AddrPort()) {
		ln.Close()
		return nil, &usageError{fmt.Errorf("the socket systemd passed listens on %s (cwcreds.socket ListenStream=) but CWCREDS_LISTEN_ADDR is %s; "+
			"make them the same: change CWCREDS_LISTEN_ADDR, or the socket with `systemctl edit cwcreds.socket` "+
			"([Socket], an empty ListenStream= line, then ListenStream=%s) and `systemctl restart cwcreds.socket cwcreds`",
			got, addr, addr)}
	}
	return &listener{Listener: ln, activated: true}, nil
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
