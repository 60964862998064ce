package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cwcreds/cwcreds/peer"
)

// socketTrust is who may own the socket a client command sends a token to:
// root (a socket systemd holds for cwcreds.socket is root's), the caller
// itself (its own token goes nowhere new), and the owner of each file the
// daemon made (its runtime directory, the token file being sent): the
// daemon's user. Anyone else listening there took the port while the daemon
// was down, or where it never listened (finding 1 of issue 11).
type socketTrust struct {
	uids map[uint32]string // uid -> why it is trusted
}

// trustFor trusts root, the caller and the owners of paths (those that
// exist).
func trustFor(paths ...string) socketTrust {
	st := socketTrust{uids: map[uint32]string{0: "root"}}
	if _, ok := st.uids[uint32(os.Geteuid())]; !ok {
		st.uids[uint32(os.Geteuid())] = "you"
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if s, ok := fi.Sys().(*syscall.Stat_t); ok {
			if _, ok := st.uids[s.Uid]; !ok {
				st.uids[s.Uid] = "owner of " + p
			}
		}
	}
	return st
}

func (st socketTrust) describe() string {
	var parts []string
	for uid, why := range st.uids {
		parts = append(parts, fmt.Sprintf("%s (%s)", userName(uid), why))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return fmt.Sprintf("uid %d %s", uid, u.Username)
	}
	return fmt.Sprintf("uid %d", uid)
}

// errForeignListener: the socket at the daemon's address is not the
// daemon's; nothing was sent.
var errForeignListener = errors.New("the socket listening there is not the cwcreds daemon's")

// check verifies the socket listening at addr (host:port). With
// mustListen false, no listener at all is not an error (the daemon is
// down: a connection would be refused, and nothing sent).
func (st socketTrust) check(addr string, mustListen bool) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("daemon address %s is not IP:port (names are not resolved, so that the socket's owner can be checked)", addr)
	}
	l, err := peer.ListenerOwner(ap)
	switch {
	case errors.Is(err, peer.ErrNoListener) && !mustListen:
		return nil
	case errors.Is(err, peer.ErrNoListener):
		return fmt.Errorf("refusing to send a token to %s: no socket listens there any more (a daemon restart? try again)", addr)
	case err != nil:
		return fmt.Errorf("refusing to send a token to %s: cannot tell who owns the socket listening there: %w", addr, err)
	}
	if _, ok := st.uids[l.UID]; ok {
		return nil
	}
	return fmt.Errorf("refusing to send a token to %s: %w: it belongs to %s, and only %s may run it. "+
		"Another local user may have taken the port while the daemon was down; nothing was sent. "+
		"See `ss -ltnpe 'sport = :%d'`, stop that process and restart cwcreds (`systemctl restart cwcreds.socket cwcreds`)",
		addr, errForeignListener, userName(l.UID), st.describe(), ap.Port())
}

// dialer connects to the daemon only once the socket listening at the
// address belongs to a trusted user, checked before connecting and again
// once connected (the listener could have changed in between): a request,
// and its token, is written only on a connection that passed both.
func (st socketTrust) dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := st.check(addr, false); err != nil {
			return nil, err
		}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := st.check(addr, true); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// daemonHTTPClient is an HTTP client for the daemon's address that checks
// the listening socket's owner (see dialer), never uses a proxy and never
// follows redirects.
func daemonHTTPClient(st socketTrust, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:             nil, // loopback: never through a proxy (the daemon refuses relayed requests)
			DialContext:       st.dialer(timeout),
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
