package peer

import (
	"errors"
	"net/http"
)

var errNoConn = errors.New("peer: the connection was not registered (http.Server.ConnContext is not peer.ConnContext)")

// Requests identifies the peer of an HTTP request from the *Conn that
// ConnContext attached to its connection; it satisfies server.Peers.
type Requests struct{}

// PeerUID returns the uid owning the client's socket.
func (Requests) PeerUID(r *http.Request) (uint32, error) {
	c := FromContext(r.Context())
	if c == nil {
		return 0, errNoConn
	}
	return c.UID()
}

// Groups returns the groups of uid's user from the user database, as it is
// now (see Groups); the server bounds how long it trusts the answer.
func (Requests) Groups(uid uint32) ([]uint32, error) { return Groups(uid) }

// Identity reports the peer's uid for the audit log (a
// server.PeerIdentity) when it has been looked up already, and never looks
// it up itself: requests for unrestricted profiles cost nothing. The pid is
// never known (0).
func Identity(r *http.Request) (uid, pid int, ok bool) {
	c := FromContext(r.Context())
	if c == nil {
		return 0, 0, false
	}
	u, ok := c.Known()
	return int(u), 0, ok
}
