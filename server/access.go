package server

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Access says who may use a profile. A request from a loopback peer is
// served when UIDs and GIDs are both empty, or the peer's uid is in UIDs
// or one of its groups in GIDs. A request from a peer beyond loopback (a
// pod calling a pod identity address) is served only when Pods is set and
// UIDs and GIDs are empty: such a connection has no local user to check.
// The zero Access serves loopback peers only.
type Access struct {
	UIDs []uint32
	GIDs []uint32
	// Pods serves the profile to peers beyond loopback: set for
	// workload-oidc profiles and for CWCREDS_PROFILE_<NAME>_ALLOW_PODS.
	Pods bool
}

func (a Access) restricted() bool { return len(a.UIDs) > 0 || len(a.GIDs) > 0 }

// equal reports whether a and b list the same ids in the same order (a
// reload keeps a profile only when its Access is equal).
func (a Access) equal(b Access) bool {
	return slices.Equal(a.UIDs, b.UIDs) && slices.Equal(a.GIDs, b.GIDs) && a.Pods == b.Pods
}

// clone returns a copy of a sharing no memory with it, so a caller
// modifying its slices later cannot change a served profile.
func (a Access) clone() Access {
	return Access{UIDs: slices.Clone(a.UIDs), GIDs: slices.Clone(a.GIDs), Pods: a.Pods}
}

// Peers identifies the local user behind a request, for Options.Access.
// Implementations must be safe for concurrent use.
type Peers interface {
	// PeerUID returns the uid owning the client's socket. It may be
	// resolved once per connection (see package peer): a socket's owner
	// never changes.
	PeerUID(r *http.Request) (uint32, error)
	// Groups returns the gids of uid's user, as the system says now. The
	// Server caches the answer per uid for at most GroupsTTL, and forgets
	// every answer at SetProfiles and RecheckAccess, so implementations
	// should not cache it themselves: a user removed from a group must
	// lose access on connections they already hold.
	Groups(uid uint32) ([]uint32, error)
}

// GroupsTTL bounds how long the Server trusts a uid's group list: after
// it, the next request of a profile restricted by ALLOWED_GIDS looks the
// groups up again, whichever connection it comes on. A user removed from
// an allowed group is refused at most this long after the change, or at
// once after a reload (systemctl reload cwcreds).
const GroupsTTL = 5 * time.Second

// maxGroupEntries bounds the group cache; past it the cache starts afresh.
// One entry per distinct local uid that asked for a GID-restricted
// profile within GroupsTTL, so it is never reached on a normal node.
const maxGroupEntries = 4096

// groupCache remembers each uid's groups (or the error looking them up)
// for at most ttl. Its zero value is ready to use, with ttl GroupsTTL. The
// hit path is one atomic load, one sync.Map load and a clock read.
type groupCache struct {
	ttl  time.Duration // 0: GroupsTTL
	gen  atomic.Uint64 // bumped by forget; entries of an older generation are stale
	size atomic.Int64  // entries stored since the last clear (an upper bound)
	m    sync.Map      // uint32 -> *groupEntry, never modified once stored
}

type groupEntry struct {
	gids []uint32
	err  error
	at   time.Time // when the lookup started
	gen  uint64
}

// groups returns uid's groups, from the cache when they were looked up
// less than ttl before now and since the last forget, else from peers.
func (c *groupCache) groups(peers Peers, uid uint32, now time.Time) ([]uint32, error) {
	ttl := c.ttl
	if ttl == 0 {
		ttl = GroupsTTL
	}
	gen := c.gen.Load()
	if v, ok := c.m.Load(uid); ok {
		e := v.(*groupEntry)
		// A clock that went back makes now.Sub negative: look up again.
		if age := now.Sub(e.at); e.gen == gen && age >= 0 && age < ttl {
			return e.gids, e.err
		}
	}
	gids, err := peers.Groups(uid)
	// Stamped with the generation read before the lookup: a lookup that
	// overlapped a forget is stale already and is not trusted next time.
	if c.size.Add(1) > maxGroupEntries {
		c.m.Clear()
		c.size.Store(1)
	}
	c.m.Store(uid, &groupEntry{gids: gids, err: err, at: now, gen: gen})
	return gids, err
}

// forget makes every cached group list stale.
func (c *groupCache) forget() { c.gen.Add(1) }

// RecheckAccess makes the next request of every profile restricted by
// ALLOWED_GIDS look its peer's groups up again, on every connection.
// SetProfiles does it too; the daemon calls it at every reload, applied or
// not, so `systemctl reload cwcreds` applies a group change at once.
func (s *Server) RecheckAccess() { s.groups.forget() }

// The refusals of a restricted profile. Neither says which users are
// allowed.
var (
	errForbiddenPeer = &requestError{http.StatusForbidden, codeForbidden,
		"this profile is restricted to some local users, and this connection's user is not one of them"}
	errUnknownPeer = &requestError{http.StatusForbidden, codeForbidden,
		"this profile is restricted to some local users, and this connection's user could not be identified"}
)

// The refusals to peers beyond loopback (pods). They name the setting
// that allows a profile, never a secret.
var (
	errPodNotAllowed = &requestError{http.StatusForbidden, codeForbidden,
		"this profile is not served to clients beyond loopback such as pods; " +
			"the node's operator can allow it with CWCREDS_PROFILE_<NAME>_ALLOW_PODS=true"}
	errPodRestricted = &requestError{http.StatusForbidden, codeForbidden,
		"this profile is restricted to some local users, and a connection from beyond loopback has no local user to check"}
	errLoopbackOnly = &requestError{http.StatusForbidden, codeForbidden,
		"this endpoint answers only on loopback, to processes of the node itself, not to pods"}
)

// loopbackPeer reports whether r comes from a loopback address. A remote
// address that does not parse counts as beyond loopback.
func loopbackPeer(r *http.Request) bool {
	// net formats a connection's address canonically: the common cases
	// need no parsing.
	if strings.HasPrefix(r.RemoteAddr, "127.") || strings.HasPrefix(r.RemoteAddr, "[::1]:") {
		return true
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// loopbackOnly refuses requests from peers beyond loopback: the IMDS role,
// the admin routes and the status page are for the node itself.
func (s *Server) loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackPeer(r) {
			s.auditRefused(r, "", OutcomeForbidden, whyLoopbackOnly)
			s.writeError(w, r, errLoopbackOnly)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Reasons the audit trail records for refusals to peers beyond loopback.
const (
	whyNotForPods   = "credential request refused: profile not served to pods"
	whyLoopbackOnly = "request refused: endpoint answers loopback only"
)

// checkAccess returns nil when p may be served to r's peer. A peer beyond
// loopback gets only a profile with Access.Pods and no local-user
// restriction. A loopback peer gets a profile without restriction, else
// only when identified and allowed. It logs at warn the failures to
// identify the peer; the refusal itself is recorded by the audit trail
// (see refuse).
func (s *Server) checkAccess(r *http.Request, p *profile) *requestError {
	if !loopbackPeer(r) {
		switch {
		case !p.access.Pods:
			return errPodNotAllowed
		case p.access.restricted():
			return errPodRestricted
		}
		return nil
	}
	if !p.access.restricted() {
		return nil
	}
	if s.peers == nil {
		s.lines.event(s.now(), s.log.Warn).Str("profile", p.name).Str("remote", r.RemoteAddr).
			Msg("refused: profile is restricted to some users but the daemon cannot identify peers")
		return errUnknownPeer
	}
	uid, err := s.peers.PeerUID(r)
	if err != nil {
		s.lines.event(s.now(), s.log.Warn).Str("profile", p.name).Str("remote", r.RemoteAddr).Err(err).
			Msg("refused: cannot identify the local user of the connection")
		return errUnknownPeer
	}
	if slices.Contains(p.access.UIDs, uid) {
		return nil
	}
	if len(p.access.GIDs) > 0 {
		gids, err := s.groups.groups(s.peers, uid, s.now())
		if err != nil {
			s.lines.event(s.now(), s.log.Warn).Str("profile", p.name).Str("remote", r.RemoteAddr).Uint32("peer_uid", uid).Err(err).
				Msg("refused: cannot read the groups of the connection's user")
			return errUnknownPeer
		}
		for _, g := range gids {
			if slices.Contains(p.access.GIDs, g) {
				return nil
			}
		}
	}
	return errForbiddenPeer // recorded by the audit trail, with the peer's uid
}
