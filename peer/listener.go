package peer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// ErrNoListener means no TCP socket listens where a connection to the
// address would go.
var ErrNoListener = errors.New("peer: no socket listens on that address")

// Listener is a listening TCP socket and the uid that created it.
type Listener struct {
	Addr netip.AddrPort
	UID  uint32
}

// ListenerOwner returns the listening socket a TCP connection to dst would
// reach on this host, and its owner: the uid that created the socket (for a
// socket systemd made, root, whichever process accepts on it). It asks
// netlink sock_diag, else reads /proc/net/tcp and tcp6.
//
// Of the sockets listening on dst's port it picks the one the kernel
// delivers to: one bound to dst's address (IPv4, then IPv4-mapped IPv6),
// else one bound to the wildcard address.
func ListenerOwner(dst netip.AddrPort) (Listener, error) {
	ls, err := listenersNetlink(dst.Port())
	if errors.Is(err, errNoNetlink) {
		ls, err = listenersProc("/proc/net", dst.Port())
	}
	if err != nil {
		return Listener{}, err
	}
	return pickListener(dst, ls)
}

// pickListener chooses, among the sockets listening on dst's port, the one
// a connection to dst reaches.
func pickListener(dst netip.AddrPort, ls []Listener) (Listener, error) {
	a := dst.Addr().Unmap()
	var cands []netip.Addr
	if a.Is4() {
		m := netip.AddrFrom16(a.As16())
		cands = []netip.Addr{a, m, netip.IPv4Unspecified(), netip.IPv6Unspecified()}
	} else {
		cands = []netip.Addr{a, netip.IPv6Unspecified()}
	}
	for _, c := range cands {
		for _, l := range ls {
			if l.Addr.Port() == dst.Port() && l.Addr.Addr() == c {
				return l, nil
			}
		}
	}
	return Listener{}, fmt.Errorf("%w: %s", ErrNoListener, dst)
}

// listenersProc reads the listening sockets on port from dir/tcp and
// dir/tcp6.
func listenersProc(dir string, port uint16) ([]Listener, error) {
	var out []Listener
	for _, name := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) && name == "tcp6" {
			continue // no IPv6
		}
		if err != nil {
			return nil, fmt.Errorf("peer: %w", err)
		}
		ls, err := parseListeners(b, port)
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

// parseListeners returns the LISTEN entries on port of a /proc/net/tcp or
// tcp6 table.
func parseListeners(b []byte, port uint16) ([]Listener, error) {
	var out []Listener
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 512), 4096)
	for first := true; sc.Scan(); first = false {
		if first {
			continue
		}
		var f [8][]byte
		n := 0
		for field := range bytes.FieldsSeq(sc.Bytes()) {
			f[n] = field
			if n++; n == len(f) {
				break
			}
		}
		if n < len(f) {
			return nil, fmt.Errorf("peer: malformed socket table line %q", sc.Bytes())
		}
		st, err := strconv.ParseUint(string(f[3]), 16, 8)
		if err != nil {
			return nil, fmt.Errorf("peer: malformed state in socket table line %q", sc.Bytes())
		}
		if st != tcpListen {
			continue
		}
		l, ok := parseHexAddrPort(f[1])
		if !ok {
			return nil, fmt.Errorf("peer: malformed address in socket table line %q", sc.Bytes())
		}
		if l.Port() != port {
			continue
		}
		uid, err := strconv.ParseUint(string(f[7]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("peer: malformed uid in socket table line %q", sc.Bytes())
		}
		out = append(out, Listener{Addr: l, UID: uint32(uid)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("peer: reading socket table: %w", err)
	}
	return out, nil
}
