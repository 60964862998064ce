package peer

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"testing"
)

// pair returns both ends of a TCP connection over network/addr.
func pair(t testing.TB, network, addr string) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	defer ln.Close()
	client, err = net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

func ends(c net.Conn) (local, remote netip.AddrPort) {
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
}

// Every method finds this process's own client sockets, on IPv4, IPv6 and
// a dual-stack listener reached over IPv4 (mapped addresses).
func TestLookupOwnSockets(t *testing.T) {
	me := uint32(os.Getuid())
	for _, tc := range []struct{ name, network, listen, dial string }{
		{"ipv4", "tcp4", "127.0.0.1:0", ""},
		{"ipv6", "tcp6", "[::1]:0", ""},
		{"dual-stack", "tcp", "[::]:0", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srv net.Conn
			if tc.dial == "" {
				srv, _ = pair(t, tc.network, tc.listen)
			} else {
				ln, err := net.Listen(tc.network, tc.listen)
				if err != nil {
					t.Skipf("listen: %v", err)
				}
				defer ln.Close()
				port := ln.Addr().(*net.TCPAddr).Port
				c, err := net.Dial("tcp4", net.JoinHostPort(tc.dial, itoa(port)))
				if err != nil {
					t.Skipf("dial: %v", err)
				}
				defer c.Close()
				if srv, err = ln.Accept(); err != nil {
					t.Fatal(err)
				}
				defer srv.Close()
			}
			local, remote := ends(srv)
			if tc.dial != "" && !local.Addr().Is4In6() {
				t.Logf("server side sees %s (not mapped)", local)
			}
			if uid, err := lookupNetlink(local, remote); err != nil || uid != me {
				t.Errorf("netlink: %d, %v; want %d", uid, err, me)
			}
			if uid, err := LookupProc("/proc/self/net", local, remote); err != nil || uid != me {
				t.Errorf("proc: %d, %v; want %d", uid, err, me)
			}
			if uid, err := Lookup(local, remote); err != nil || uid != me {
				t.Errorf("Lookup: %d, %v; want %d", uid, err, me)
			}
			// The server side's own socket must not be taken for the client's:
			// swapped, the lookup finds the server socket, which is ours too,
			// so check a closed peer instead.
		})
	}
}

func TestLookupClosed(t *testing.T) {
	srv, cl := pair(t, "tcp4", "127.0.0.1:0")
	local, remote := ends(srv)
	cl.Close()
	srv.Close()
	// The client socket is gone or in TIME_WAIT: neither has an owner.
	for name, fn := range map[string]func() (uint32, error){
		"netlink": func() (uint32, error) { return lookupNetlink(local, remote) },
		"proc":    func() (uint32, error) { return LookupProc("/proc/self/net", local, remote) },
	} {
		if uid, err := fn(); err == nil {
			t.Errorf("%s: found uid %d for a closed connection", name, uid)
		}
	}
}

func TestConnContext(t *testing.T) {
	srv, _ := pair(t, "tcp4", "127.0.0.1:0")
	ctx := ConnContext(context.Background(), srv)
	c := FromContext(ctx)
	if c == nil {
		t.Fatal("no Conn in the context")
	}
	if _, ok := c.Known(); ok {
		t.Error("Known before any lookup")
	}
	uid, err := c.UID()
	if err != nil || uid != uint32(os.Getuid()) {
		t.Fatalf("UID = %d, %v", uid, err)
	}
	if k, ok := c.Known(); !ok || k != uid {
		t.Errorf("Known = %d, %v after UID", k, ok)
	}
	gids, err := Requests{}.Groups(uid)
	if u, lerr := user.LookupId(strconv.Itoa(os.Getuid())); lerr != nil {
		if err == nil {
			t.Errorf("GIDs = %v for a uid the user database does not know", gids)
		}
	} else if err != nil || len(gids) == 0 || strconv.Itoa(int(gids[0])) != u.Gid {
		t.Errorf("GIDs = %v, %v; want the primary group %s first", gids, err, u.Gid)
	}
	if FromContext(context.Background()) != nil {
		t.Error("FromContext of a bare context is not nil")
	}
	bad := NewConn(&net.UnixAddr{}, &net.UnixAddr{})
	if _, err := bad.UID(); err == nil {
		t.Error("UID of a non-TCP connection succeeded")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
