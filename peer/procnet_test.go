package peer

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fixtures are tables as a little-endian kernel prints them.
func skipBigEndian(t *testing.T) {
	t.Helper()
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	if b[0] != 1 {
		t.Skip("testdata holds little-endian socket tables")
	}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestParseProcNet(t *testing.T) {
	skipBigEndian(t)
	tests := []struct {
		file, local, remote string // the client socket's own view
		uid                 uint32
		err                 error
	}{
		{"tcp", "127.0.0.1:54321", "127.0.0.1:7911", 1001, nil},
		{"tcp", "127.0.0.1:7911", "127.0.0.1:54321", 998, nil},       // the server side
		{"tcp", "127.0.0.1:50000", "127.0.0.1:7911", 0, ErrNotFound}, // TIME_WAIT never matches
		{"tcp", "127.0.0.1:7911", "0.0.0.0:0", 0, ErrNotFound},       // LISTEN never matches
		{"tcp", "10.0.2.15:36412", "93.184.216.34:443", 1002, nil},
		{"tcp", "127.0.0.1:1", "127.0.0.1:7911", 0, ErrNotFound},
		{"tcp6", "[::1]:59554", "[::1]:7911", 1003, nil},
		{"tcp6", "[::ffff:127.0.0.1]:45506", "[::ffff:127.0.0.1]:7911", 1004, nil},
		{"tcp6", "[::1]:1", "[::1]:7911", 0, ErrNotFound},
	}
	for _, tt := range tests {
		f, err := os.Open(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		uid, err := ParseProcNet(f, ap(tt.local), ap(tt.remote))
		f.Close()
		if uid != tt.uid || !errors.Is(err, tt.err) && !(err == nil && tt.err == nil) {
			t.Errorf("%s %s -> %s: uid %d, err %v; want %d, %v", tt.file, tt.local, tt.remote, uid, err, tt.uid, tt.err)
		}
	}
}

func TestParseProcNetMalformed(t *testing.T) {
	for _, table := range []string{
		"header\n   0: 0100007F:1EE7\n",
		"header\n   0: 0100007G:1EE7 0100007F:D431 01 0:0 0:0 0 1001 0 1\n",
		"header\n   0: 0100007F:D431 0100007F:1EE7 01 0:0 0:0 0 x 0 1\n",
		"header\n   0: 0100007F:D431 0100007F:1EE7 zz 0:0 0:0 0 1 0 1\n",
		"header\n   0: 100007F:D431 0100007F:1EE7 01 0:0 0:0 0 1 0 1\n",
	} {
		_, err := ParseProcNet(strings.NewReader(table), ap("127.0.0.1:54321"), ap("127.0.0.1:7911"))
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("ParseProcNet(%q) = %v, want a parse error", table, err)
		}
	}
}

// LookupProc takes the server side's view and tries both tables for IPv4
// peers: an AF_INET client, or an AF_INET6 client on a mapped address.
func TestLookupProcFixtures(t *testing.T) {
	skipBigEndian(t)
	tests := []struct {
		local, remote string // the server side's view, as net.Conn reports it
		uid           uint32
	}{
		{"127.0.0.1:7911", "127.0.0.1:54321", 1001},
		{"[::ffff:127.0.0.1]:7911", "[::ffff:127.0.0.1]:54321", 1001}, // dual-stack listener, AF_INET client
		{"127.0.0.1:7911", "127.0.0.1:45506", 1004},                   // AF_INET6 client on ::ffff:127.0.0.1
		{"[::1]:7911", "[::1]:59554", 1003},
	}
	for _, tt := range tests {
		uid, err := LookupProc("testdata", ap(tt.local), ap(tt.remote))
		if err != nil || uid != tt.uid {
			t.Errorf("LookupProc(%s, %s) = %d, %v; want %d", tt.local, tt.remote, uid, err, tt.uid)
		}
	}
	if _, err := LookupProc("testdata", ap("[::1]:7911"), ap("[::1]:1")); !errors.Is(err, ErrNotFound) {
		t.Errorf("LookupProc of an absent socket: %v, want ErrNotFound", err)
	}
	if _, err := LookupProc(t.TempDir(), ap("[::1]:7911"), ap("[::1]:1")); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("LookupProc without tables: %v, want an open error", err)
	}
}
