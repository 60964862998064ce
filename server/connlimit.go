package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/peer"
)

// ConnLimits bounds the connections an http.Server holds open (see
// LimitConnections).
type ConnLimits struct {
	// Total bounds the connections open at once, all peers together.
	Total int
	// PerPeer bounds the connections of one peer: one local user (the uid
	// owning the client socket), or one remote address when the uid cannot
	// be found (every loopback address counts as one).
	PerPeer int
}

// DefaultConnLimits are the daemon's limits. The per-user limit must stay
// above the largest legitimate herd of one user: a data loader's workers
// on every GPU of a node start together, each process opening its own
// connection and all of them waiting on the same first mint (a busy
// connection is never displaced), so 1,000 processes of one uid must all
// be served (scripts/bench's herd is exactly that). Each open connection
// costs an fd and about 20 KiB (goroutine, buffers): 8192 of them stay
// near 160 MiB, inside the DaemonSet's 256 MiB limit, and far below the
// fd limit Go raises itself to. It takes 8 local users at their cap to
// reach the total.
var DefaultConnLimits = ConnLimits{Total: 8192, PerPeer: 1024}

// LimitConnections returns ln wrapped so that srv, serving it, holds at
// most limits.PerPeer connections per peer and limits.Total in all.
//
// A peer is identified once per connection, at accept, with peer.Lookup
// (the uid owning the client's socket, one netlink round trip). A new
// connection over a limit first displaces a quiet one (accepted but
// without a request yet, or idle between requests): the oldest quiet
// connection of the same peer at the per-peer limit, or of the peer with
// the most connections at the total limit. Only when there is none (every
// such connection is in a request) is the new one refused, with a 503
// TooManyConnections written before it is closed. So a user flooding
// connections only ever displaces or loses their own, and a client that
// leaks idle connections keeps working: it merely reconnects.
//
// Every write on an admitted connection is bounded by writeTimeout (see
// limitedConn.Write): this, not http.Server.WriteTimeout, is what ends a
// client that stops reading (see NewHTTPServer's time bounds).
//
// It sets srv.ConnState and srv.ConnContext, calling any hook already
// set, so call it once those are set and before srv.Serve. ConnContext
// attaches the peer to the connection's context, where the server finds
// it (see peerOf) without another lookup.
func LimitConnections(srv *http.Server, ln net.Listener, limits ConnLimits, log zerolog.Logger) net.Listener {
	l := newConnLimiter(ln, limits, peer.Lookup, log)
	prevState, prevCtx := srv.ConnState, srv.ConnContext
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		l.connState(c, st)
		if prevState != nil {
			prevState(c, st)
		}
	}
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prevCtx != nil {
			ctx = prevCtx(ctx, c)
		}
		if lc, ok := c.(*limitedConn); ok {
			ctx = context.WithValue(ctx, connPeerKey{}, lc.peer.key)
		}
		return ctx
	}
	return l
}

// peerKey identifies a peer for the connection limits and the IMDS
// session-token quota: a uid when it is known, else a remote address.
type peerKey struct {
	uid    uint32
	hasUID bool
	addr   netip.Addr // when !hasUID
}

func (k peerKey) String() string {
	if k.hasUID {
		return "uid " + strconv.FormatUint(uint64(k.uid), 10)
	}
	return "address " + k.addr.String()
}

// unknownLoopback is the one key of every loopback peer whose uid is
// unknown: a local user can connect from any of 127.0.0.0/8.
var unknownLoopback = peerKey{addr: netip.IPv6Loopback()}

// addrKey is the key of a peer at remote address a whose uid is unknown.
func addrKey(a netip.Addr) peerKey {
	a = a.Unmap()
	if a.IsLoopback() || !a.IsValid() {
		return unknownLoopback
	}
	return peerKey{addr: a}
}

type connPeerKey struct{}

// peerOf returns the peer of r: the one the connection limiter found at
// accept, else the uid s.peers finds, else r's remote address.
func (s *Server) peerOf(r *http.Request) peerKey {
	if k, ok := r.Context().Value(connPeerKey{}).(peerKey); ok {
		return k
	}
	if s.peers != nil {
		if uid, err := s.peers.PeerUID(r); err == nil {
			return peerKey{uid: uid, hasUID: true}
		}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return unknownLoopback
	}
	return addrKey(ap.Addr())
}

// connLimiter is the listener LimitConnections returns.
type connLimiter struct {
	net.Listener
	limits ConnLimits
	lookup func(local, remote netip.AddrPort) (uint32, error)
	log    zerolog.Logger
	now    func() time.Time
	// writeTimeout bounds every write on an admitted connection (see
	// limitedConn.Write); epoch is the origin of their write deadlines.
	writeTimeout time.Duration
	epoch        time.Time

	mu    sync.Mutex
	total int
	peers map[peerKey]*connPeer
	// lastLog is when a refusal or displacement was last logged; they are
	// logged at most once per connLogEvery, with counts.
	lastLog              time.Time
	refused, displaced   atomic.Uint64 // since start
	loggedRef, loggedDis uint64
}

// connLogEvery bounds the log lines a connection flood causes.
const connLogEvery = 10 * time.Second

// connPeer is one peer's open connections.
type connPeer struct {
	key   peerKey
	n     int
	quiet connList // connections outside a request, longest quiet first
}

// connList is an intrusive doubly linked list of connections.
type connList struct{ first, last *limitedConn }

func (q *connList) push(c *limitedConn) {
	c.prev, c.next = q.last, nil
	if q.last != nil {
		q.last.next = c
	} else {
		q.first = c
	}
	q.last = c
	c.quiet = true
}

func (q *connList) remove(c *limitedConn) {
	if !c.quiet {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		q.first = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		q.last = c.prev
	}
	c.prev, c.next, c.quiet = nil, nil, false
}

// limitedConn is an accepted connection counted against its peer.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	peer *connPeer
	// Guarded by l.mu.
	quiet      bool // in peer.quiet
	prev, next *limitedConn
	released   bool

	// wdl is the write deadline set on Conn, in nanoseconds since l.epoch
	// (0: none yet), or ownWriteDeadline while a caller's own is in force.
	wdl atomic.Int64
}

const ownWriteDeadline = -1

// Write bounds each write to l.writeTimeout, as http.Server's
// WriteTimeout would but without a timer operation per request: the one
// write deadline is re-armed (to now + writeTimeout) only when less than
// half of writeTimeout is left, so a write that blocks (a client that
// stopped reading, its socket buffers full) fails between writeTimeout/2
// and writeTimeout after it started, and net/http closes the connection.
// A normal write costs one monotonic clock read.
func (c *limitedConn) Write(p []byte) (int, error) {
	if d := c.l.writeTimeout; d > 0 {
		now := int64(time.Since(c.l.epoch))
		if dl := c.wdl.Load(); dl != ownWriteDeadline && dl-now < int64(d/2) {
			dl = now + int64(d)
			if err := c.Conn.SetWriteDeadline(c.l.epoch.Add(time.Duration(dl))); err != nil {
				return 0, err
			}
			c.wdl.Store(dl)
		}
	}
	return c.Conn.Write(p)
}

// SetWriteDeadline sets a caller's own write deadline, which Write then
// leaves alone. The zero time, which net/http sets after every request,
// only returns the connection to Write's own bound: it is no syscall and
// no timer operation.
func (c *limitedConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.wdl.CompareAndSwap(ownWriteDeadline, 0)
		return nil
	}
	c.wdl.Store(ownWriteDeadline)
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *limitedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// Close releases the connection's place, then closes it.
func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

func newConnLimiter(ln net.Listener, limits ConnLimits, lookup func(local, remote netip.AddrPort) (uint32, error), log zerolog.Logger) *connLimiter {
	if limits.Total <= 0 {
		limits.Total = DefaultConnLimits.Total
	}
	if limits.PerPeer <= 0 || limits.PerPeer > limits.Total {
		limits.PerPeer = min(DefaultConnLimits.PerPeer, limits.Total)
	}
	return &connLimiter{Listener: ln, limits: limits, lookup: lookup, log: log.With().Str("component", "connlimit").Logger(),
		now: time.Now, writeTimeout: writeTimeout, epoch: time.Now(), peers: make(map[peerKey]*connPeer)}
}

// Accept returns the next connection within the limits; connections over
// them are refused here and never reach the server.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := l.identify(c)
		lc, victim := l.admit(c, key)
		if victim != nil {
			_ = victim.Conn.Close() // its server goroutine sees the error and ends
		}
		if lc != nil {
			return lc, nil
		}
		refuse(c)
	}
}

// identify returns the peer of c: its uid, else its remote address.
func (l *connLimiter) identify(c net.Conn) peerKey {
	local, remote := tcpAddrPort(c.LocalAddr()), tcpAddrPort(c.RemoteAddr())
	if local.IsValid() && remote.IsValid() {
		if uid, err := l.lookup(local, remote); err == nil {
			return peerKey{uid: uid, hasUID: true}
		}
	}
	return addrKey(remote.Addr())
}

func tcpAddrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}

// admit counts c against key's peer and returns it wrapped, with the quiet
// connection it displaces (already released; the caller closes it), or nil
// when c must be refused.
func (l *connLimiter) admit(c net.Conn, key peerKey) (lc, victim *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.peers[key]
	if p == nil {
		p = &connPeer{key: key}
		l.peers[key] = p
	}
	switch {
	case p.n >= l.limits.PerPeer:
		victim = p.quiet.first
	case l.total >= l.limits.Total:
		victim = l.largestQuietLocked()
	}
	over := p.n >= l.limits.PerPeer || l.total >= l.limits.Total
	if over && victim == nil {
		if p.n == 0 {
			delete(l.peers, key)
		}
		l.refused.Add(1)
		l.logLocked(key)
		return nil, nil
	}
	if victim != nil {
		l.releaseLocked(victim)
		l.displaced.Add(1)
		l.logLocked(key)
	}
	lc = &limitedConn{Conn: c, l: l, peer: p}
	p.n++
	l.total++
	p.quiet.push(lc) // accepted, no request yet
	return lc, victim
}

// largestQuietLocked returns the oldest quiet connection of the peer with
// the most connections that has one, or nil. It scans the peers, which
// happens only at the total limit, reached by many users at once.
func (l *connLimiter) largestQuietLocked() *limitedConn {
	var best *connPeer
	for _, p := range l.peers {
		if p.quiet.first != nil && (best == nil || p.n > best.n) {
			best = p
		}
	}
	if best == nil {
		return nil
	}
	return best.quiet.first
}

// releaseLocked gives c's place back, once.
func (l *connLimiter) releaseLocked(c *limitedConn) {
	if c.released {
		return
	}
	c.released = true
	p := c.peer
	p.quiet.remove(c)
	p.n--
	l.total--
	if p.n == 0 {
		delete(l.peers, p.key)
	}
}

// connState tracks which connections are quiet (displaceable): new ones
// until their first request, and idle ones between requests.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.released {
		return
	}
	switch st {
	case http.StateIdle:
		lc.peer.quiet.remove(lc)
		lc.peer.quiet.push(lc) // quiet since now: the newest
	case http.StateActive, http.StateHijacked:
		lc.peer.quiet.remove(lc)
	case http.StateClosed:
		l.releaseLocked(lc)
	}
}

// logLocked logs refusals and displacements, at most once per connLogEvery.
func (l *connLimiter) logLocked(key peerKey) {
	now := l.now()
	if now.Sub(l.lastLog) < connLogEvery {
		return
	}
	ref, dis := l.refused.Load(), l.displaced.Load()
	l.log.Warn().Str("peer", key.String()).Int("peer_connections", l.peers[key].count()).Int("connections", l.total).
		Int("max_per_peer", l.limits.PerPeer).Int("max_connections", l.limits.Total).
		Uint64("refused", ref-l.loggedRef).Uint64("displaced", dis-l.loggedDis).
		Msg("connection limit reached: displacing quiet connections, refusing new ones when none is quiet")
	l.lastLog, l.loggedRef, l.loggedDis = now, ref, dis
}

func (p *connPeer) count() int {
	if p == nil {
		return 0
	}
	return p.n
}

// stats returns the open connections in all and of key (tests).
func (l *connLimiter) stats(key peerKey) (total, ofPeer int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.peers[key].count()
}

// tooManyConnections is the whole answer to a refused connection.
var tooManyConnections = func() []byte {
	const msg = "too many connections from this user; close idle connections and retry"
	body := fmt.Sprintf(`{"code":%q,"message":%q,"Code":%q,"Message":%q}`, codeTooManyConnections, msg, codeTooManyConnections, msg)
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"+
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

// refuse answers c with a 503 and closes it. The write goes to a new
// socket's empty send buffer; the deadline only bounds a broken peer.
func refuse(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(tooManyConnections)
	_ = c.Close()
}
