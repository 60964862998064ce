package peer

import (
	"net"
	"net/netip"
	"os"
	"testing"
)

// TestListenerOwner: both netlink and /proc find this process's listener
// and its owner, and no listener is ErrNoListener.
func TestListenerOwner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	l, err := ListenerOwner(ap)
	if err != nil || l.UID != uint32(os.Geteuid()) || l.Addr != ap {
		t.Errorf("ListenerOwner(%s) = %+v, %v; want uid %d", ap, l, err, os.Geteuid())
	}
	ls, err := listenersProc("/proc/net", ap.Port())
	if err != nil {
		t.Fatal(err)
	}
	if l, err := pickListener(ap, ls); err != nil || l.UID != uint32(os.Geteuid()) {
		t.Errorf("through /proc: %+v, %v", l, err)
	}
	ln.Close()
	if _, err := ListenerOwner(ap); err == nil {
		t.Errorf("ListenerOwner of a closed listener: nil error")
	}
}

// TestPickListener: the kernel delivers to the socket bound to the exact
// address before a wildcard one.
func TestPickListener(t *testing.T) {
	mk := func(s string, uid uint32) Listener { return Listener{Addr: netip.MustParseAddrPort(s), UID: uid} }
	dst := netip.MustParseAddrPort("127.0.0.1:791")
	for _, tc := range []struct {
		name string
		ls   []Listener
		want uint32
	}{
		{"exact", []Listener{mk("0.0.0.0:791", 1), mk("127.0.0.1:791", 2)}, 2},
		{"mapped", []Listener{mk("[::]:791", 1), mk("[::ffff:127.0.0.1]:791", 3)}, 3},
		{"v4 wildcard", []Listener{mk("[::]:791", 1), mk("0.0.0.0:791", 4)}, 4},
		{"v6 wildcard", []Listener{mk("[::]:791", 5), mk("127.0.0.2:791", 6)}, 5},
	} {
		l, err := pickListener(dst, tc.ls)
		if err != nil || l.UID != tc.want {
			t.Errorf("%s: %+v, %v; want uid %d", tc.name, l, err, tc.want)
		}
	}
	if _, err := pickListener(dst, []Listener{mk("127.0.0.2:791", 1)}); err == nil {
		t.Errorf("no listener for %s: nil error", dst)
	}
	if l, err := pickListener(netip.MustParseAddrPort("[::1]:791"), []Listener{mk("0.0.0.0:791", 1), mk("[::]:791", 7)}); err != nil || l.UID != 7 {
		t.Errorf("v6: %+v, %v", l, err)
	}
	b := []byte("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:0317 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n" +
		"   1: 0100007F:1EE7 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0\n" +
		"   2: 0100007F:0317 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 100 0 0 10 0\n")
	ls, err := parseListeners(b, 791)
	if err != nil || len(ls) != 1 || ls[0].UID != 0 || ls[0].Addr != dst {
		t.Errorf("parseListeners = %+v, %v", ls, err)
	}
}
