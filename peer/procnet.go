package peer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// TCP states in /proc/net/tcp and inet_diag (include/net/tcp_states.h).
const (
	tcpTimeWait = 6
	tcpListen   = 10
)

// LookupProc is Lookup through the text tables dir/tcp and dir/tcp6 (dir is
// normally /proc/self/net).
func LookupProc(dir string, local, remote netip.AddrPort) (uint32, error) {
	var firstErr error
	for _, t := range tuples(local, remote) {
		name := "tcp"
		if t[0].Addr().Is6() {
			name = "tcp6"
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			firstErr = cmpErr(firstErr, fmt.Errorf("peer: %w", err))
			continue
		}
		uid, err := ParseProcNet(f, t[0], t[1])
		f.Close()
		if err == nil {
			return uid, nil
		}
		if !errors.Is(err, ErrNotFound) {
			firstErr = cmpErr(firstErr, err)
		}
	}
	if firstErr != nil {
		return 0, firstErr
	}
	return 0, ErrNotFound
}

func cmpErr(old, new error) error {
	if old != nil {
		return old
	}
	return new
}

// ParseProcNet reads a /proc/net/tcp or tcp6 table from r and returns the
// uid of the socket whose local address is local and remote address is
// remote (both of the table's family). Listening and TIME_WAIT entries
// never match: they have no owner that could be the client.
func ParseProcNet(r io.Reader, local, remote netip.AddrPort) (uint32, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), 4096)
	header := true
	for sc.Scan() {
		if header { // "  sl  local_address rem_address   st ..."
			header = false
			continue
		}
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		var f [8][]byte
		n := 0
		for field := range bytes.FieldsSeq(sc.Bytes()) {
			f[n] = field
			if n++; n == len(f) {
				break
			}
		}
		if n < len(f) {
			return 0, fmt.Errorf("peer: malformed socket table line %q", sc.Bytes())
		}
		l, ok1 := parseHexAddrPort(f[1])
		rm, ok2 := parseHexAddrPort(f[2])
		if !ok1 || !ok2 {
			return 0, fmt.Errorf("peer: malformed address in socket table line %q", sc.Bytes())
		}
		if l != local || rm != remote {
			continue
		}
		st, err := strconv.ParseUint(string(f[3]), 16, 8)
		if err != nil {
			return 0, fmt.Errorf("peer: malformed state in socket table line %q", sc.Bytes())
		}
		if st == tcpTimeWait || st == tcpListen {
			continue
		}
		uid, err := strconv.ParseUint(string(f[7]), 10, 32)
		if err != nil {
			return 0, fmt.Errorf("peer: malformed uid in socket table line %q", sc.Bytes())
		}
		return uint32(uid), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("peer: reading socket table: %w", err)
	}
	return 0, ErrNotFound
}

// parseHexAddrPort parses the kernel's "0100007F:1F4F" (IPv4) or
// 32-hex-digit (IPv6) form: the address as 32-bit words in host byte order,
// each printed as %08X, then the port as %04X.
func parseHexAddrPort(b []byte) (netip.AddrPort, bool) {
	i := bytes.IndexByte(b, ':')
	if i < 0 || (i != 8 && i != 32) || len(b)-i-1 != 4 {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(string(b[i+1:]), 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	var raw [16]byte
	for w := 0; w < i/8; w++ {
		v, err := strconv.ParseUint(string(b[w*8:w*8+8]), 16, 32)
		if err != nil {
			return netip.AddrPort{}, false
		}
		binary.NativeEndian.PutUint32(raw[w*4:], uint32(v))
	}
	var a netip.Addr
	if i == 8 {
		a = netip.AddrFrom4([4]byte(raw[:4]))
	} else {
		a = netip.AddrFrom16(raw)
	}
	return netip.AddrPortFrom(a, uint16(port)), true
}
