package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Sizes of the inet_diag wire structures (linux/inet_diag.h).
const (
	sizeofNlMsghdr    = 16
	sizeofInetDiagReq = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg = 72 // struct inet_diag_msg
)

var nlSeq atomic.Uint32

// lookupNetlink asks NETLINK_SOCK_DIAG for the client socket of the
// connection, once per candidate tuple. It returns errNoNetlink when a
// netlink socket cannot be opened at all.
func lookupNetlink(local, remote netip.AddrPort) (uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
			errors.Is(err, unix.EPROTONOSUPPORT) {
			return 0, fmt.Errorf("%w: %v", errNoNetlink, err)
		}
		return 0, fmt.Errorf("peer: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// The kernel answers at once; the timeout only bounds a broken kernel.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("peer: netlink timeout: %w", err)
	}
	var buf [512]byte
	for _, t := range tuples(local, remote) {
		uid, err := diagOne(fd, buf[:], t[0], t[1])
		if errors.Is(err, ErrNotFound) {
			continue
		}
		return uid, err
	}
	return 0, ErrNotFound
}

// diagOne sends one exact-match inet_diag request for the TCP socket with
// local address src and remote address dst, and reads the answer.
func diagOne(fd int, buf []byte, src, dst netip.AddrPort) (uint32, error) {
	seq := nlSeq.Add(1)
	family := uint8(unix.AF_INET6)
	if src.Addr().Is4() {
		family = unix.AF_INET
	}
	req := buf[:sizeofNlMsghdr+sizeofInetDiagReq]
	clear(req)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	r := req[sizeofNlMsghdr:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], ^uint32(0)) // idiag_states: any
	putSockID(r[8:], src, dst)
	ne.PutUint32(r[48:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	ne.PutUint32(r[52:], ^uint32(0))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("peer: netlink send: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, fmt.Errorf("peer: netlink receive: %w", err)
		}
		for msg := buf[:n]; len(msg) >= sizeofNlMsghdr; {
			mlen := int(ne.Uint32(msg[0:]))
			if mlen < sizeofNlMsghdr || mlen > len(msg) {
				return 0, errors.New("peer: malformed netlink reply")
			}
			typ, mseq, body := ne.Uint16(msg[4:]), ne.Uint32(msg[8:]), msg[sizeofNlMsghdr:mlen]
			msg = msg[min(nlAlign(mlen), len(msg)):]
			if mseq != seq {
				continue // a stale answer to an earlier request
			}
			switch typ {
			case unix.NLMSG_ERROR:
				if len(body) < 4 {
					return 0, errors.New("peer: malformed netlink error")
				}
				errno := -int32(ne.Uint32(body))
				if errno == 0 {
					continue // an acknowledgement
				}
				if unix.Errno(errno) == unix.ENOENT {
					return 0, ErrNotFound
				}
				return 0, fmt.Errorf("peer: sock_diag: %w", unix.Errno(errno))
			case unix.NLMSG_DONE:
				return 0, ErrNotFound
			case unix.SOCK_DIAG_BY_FAMILY:
				return parseDiagMsg(body, src, dst)
			}
		}
	}
}

// parseDiagMsg checks that an inet_diag_msg describes the socket asked for
// and returns its uid.
func parseDiagMsg(m []byte, src, dst netip.AddrPort) (uint32, error) {
	if len(m) < sizeofInetDiagMsg {
		return 0, errors.New("peer: short inet_diag reply")
	}
	var want [40]byte
	putSockID(want[:], src, dst)
	state := m[1]
	got := m[4:44]
	if m[0] == unix.AF_INET { // only the first 4 bytes of each address are meaningful
		clear(got[8:20])
		clear(got[24:36])
	}
	if string(got[:36]) != string(want[:36]) || state == tcpTimeWait || state == tcpListen {
		return 0, ErrNotFound
	}
	return binary.NativeEndian.Uint32(m[64:]), nil
}

// putSockID writes the first 40 bytes of struct inet_diag_sockid: ports in
// network byte order, then the source and destination addresses (IPv4 in
// the first 4 bytes), then the interface (0: any).
func putSockID(b []byte, src, dst netip.AddrPort) {
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	putAddr(b[4:20], src.Addr())
	putAddr(b[20:36], dst.Addr())
	binary.NativeEndian.PutUint32(b[36:], 0)
}

func putAddr(b []byte, a netip.Addr) {
	clear(b)
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}

func nlAlign(n int) int { return (n + 3) &^ 3 }
