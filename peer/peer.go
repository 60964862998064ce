package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
)

// ErrNotFound means no socket in the kernel's tables has the connection's
// 4-tuple: the client closed it, or it is not on this host.
var ErrNotFound = errors.New("peer: no local socket with that address pair")

// errNoNetlink marks a netlink failure that will not go away (the address
// family is refused): Lookup stops trying netlink.
var errNoNetlink = errors.New("peer: netlink sock_diag unavailable")

// netlinkOff is set once netlink sock_diag turned out to be unavailable.
var netlinkOff atomic.Bool

// Lookup returns the uid owning the client socket of a TCP connection whose
// server side has local address local and remote address remote (as
// net.Conn reports them). It uses netlink sock_diag, or /proc/self/net/tcp
// and tcp6 when netlink is refused.
func Lookup(local, remote netip.AddrPort) (uint32, error) {
	if !netlinkOff.Load() {
		uid, err := lookupNetlink(local, remote)
		if !errors.Is(err, errNoNetlink) {
			return uid, err
		}
		netlinkOff.Store(true)
	}
	return LookupProc("/proc/self/net", local, remote)
}

// tuples returns the (client local, client remote) address pairs to look for,
// in the order to try: for an IPv4 or IPv4-mapped peer, the plain IPv4 pair
// (an AF_INET client socket) then the mapped pair (an AF_INET6 client socket
// connected to ::ffff:a.b.c.d); for IPv6, the pair itself.
func tuples(local, remote netip.AddrPort) [][2]netip.AddrPort {
	cl, cr := remote, local // the client's view
	if cl.Addr().Unmap().Is4() && cr.Addr().Unmap().Is4() {
		v4l := netip.AddrPortFrom(cl.Addr().Unmap(), cl.Port())
		v4r := netip.AddrPortFrom(cr.Addr().Unmap(), cr.Port())
		m6l := netip.AddrPortFrom(netip.AddrFrom16(cl.Addr().As16()), cl.Port())
		m6r := netip.AddrPortFrom(netip.AddrFrom16(cr.Addr().As16()), cr.Port())
		return [][2]netip.AddrPort{{v4l, v4r}, {m6l, m6r}}
	}
	return [][2]netip.AddrPort{{cl, cr}}
}

// Groups returns the gids of uid's user: its primary group first, then its
// supplementary groups, from the user database (see the package doc for
// why not the process's own groups).
func Groups(uid uint32) ([]uint32, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, fmt.Errorf("peer: groups of uid %d: %w", uid, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		ids = nil // no supplementary groups known; the primary group still counts
	}
	out := make([]uint32, 0, len(ids)+1)
	if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
		out = append(out, uint32(g))
	}
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil || (len(out) > 0 && uint32(g) == out[0]) {
			continue
		}
		out = append(out, uint32(g))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("peer: uid %d has no numeric group", uid)
	}
	return out, nil
}

// Conn is one connection's peer uid, resolved lazily and at most once (a
// socket's owner never changes). It is safe for concurrent use (HTTP/2
// would run requests of one connection in parallel). It does not hold the
// user's groups: those change while a connection lives, so the server asks
// Groups again at least every few seconds (server.GroupsTTL).
type Conn struct {
	local, remote netip.AddrPort

	uidOnce sync.Once
	uid     uint32
	uidErr  error
	done    atomic.Bool // uidOnce has run
}

// NewConn returns the peer of a connection with server-side addresses local
// and remote. Nothing is looked up yet.
func NewConn(local, remote net.Addr) *Conn {
	return &Conn{local: addrPort(local), remote: addrPort(remote)}
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}

// UID returns the peer's uid, looking it up on first use.
func (c *Conn) UID() (uint32, error) {
	c.uidOnce.Do(func() {
		if !c.local.IsValid() || !c.remote.IsValid() {
			c.uidErr = errors.New("peer: not a TCP connection")
		} else {
			c.uid, c.uidErr = Lookup(c.local, c.remote)
		}
		c.done.Store(true)
	})
	return c.uid, c.uidErr
}

// Known returns the uid if it has been looked up already and was found. It
// never looks anything up.
func (c *Conn) Known() (uint32, bool) {
	if !c.done.Load() {
		return 0, false
	}
	return c.uid, c.uidErr == nil
}

type ctxKey struct{}

// ConnContext is an http.Server.ConnContext that attaches a *Conn for c to
// the connection's context.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, ctxKey{}, NewConn(c.LocalAddr(), c.RemoteAddr()))
}

// FromContext returns the *Conn ConnContext attached, or nil.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(ctxKey{}).(*Conn)
	return c
}
