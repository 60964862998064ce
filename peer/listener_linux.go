package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// listenersNetlink dumps the listening TCP sockets on port, IPv4 and IPv6,
// with NETLINK_SOCK_DIAG. It returns errNoNetlink when netlink is refused.
func listenersNetlink(port uint16) ([]Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
			errors.Is(err, unix.EPROTONOSUPPORT) {
			return nil, fmt.Errorf("%w: %v", errNoNetlink, err)
		}
		return nil, fmt.Errorf("peer: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("peer: netlink timeout: %w", err)
	}
	var out []Listener
	buf := make([]byte, 32<<10)
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ls, err := dumpListeners(fd, buf, family, port)
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

// dumpListeners sends one inet_diag dump request for family's listening
// TCP sockets on port and collects the answer.
func dumpListeners(fd int, buf []byte, family uint8, port uint16) ([]Listener, error) {
	seq := nlSeq.Add(1)
	req := make([]byte, sizeofNlMsghdr+sizeofInetDiagReq)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	r := req[sizeofNlMsghdr:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpListen)       // idiag_states
	binary.BigEndian.PutUint16(r[8:], port) // idiag_sport: the kernel filters listeners by it
	ne.PutUint32(r[48:], ^uint32(0))
	ne.PutUint32(r[52:], ^uint32(0))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("peer: netlink send: %w", err)
	}
	var out []Listener
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("peer: netlink receive: %w", err)
		}
		for msg := buf[:n]; len(msg) >= sizeofNlMsghdr; {
			mlen := int(ne.Uint32(msg[0:]))
			if mlen < sizeofNlMsghdr || mlen > len(msg) {
				return nil, errors.New("peer: malformed netlink reply")
			}
			typ, mseq, body := ne.Uint16(msg[4:]), ne.Uint32(msg[8:]), msg[sizeofNlMsghdr:mlen]
			msg = msg[min(nlAlign(mlen), len(msg)):]
			if mseq != seq {
				continue
			}
			switch typ {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(body) < 4 {
					return nil, errors.New("peer: malformed netlink error")
				}
				if errno := -int32(ne.Uint32(body)); errno != 0 {
					return nil, fmt.Errorf("peer: sock_diag dump: %w", unix.Errno(errno))
				}
			case unix.SOCK_DIAG_BY_FAMILY:
				if l, ok := parseListenerMsg(body, port); ok {
					out = append(out, l)
				}
			}
		}
	}
}

// parseListenerMsg reads a listening socket's address and uid from an
// inet_diag_msg.
func parseListenerMsg(m []byte, port uint16) (Listener, bool) {
	if len(m) < sizeofInetDiagMsg || m[1] != tcpListen {
		return Listener{}, false
	}
	sport := binary.BigEndian.Uint16(m[4:])
	if sport != port {
		return Listener{}, false
	}
	var a netip.Addr
	switch m[0] {
	case unix.AF_INET:
		a = netip.AddrFrom4([4]byte(m[8:12]))
	case unix.AF_INET6:
		a = netip.AddrFrom16([16]byte(m[8:24]))
	default:
		return Listener{}, false
	}
	return Listener{Addr: netip.AddrPortFrom(a, sport), UID: binary.NativeEndian.Uint32(m[64:])}, true
}
