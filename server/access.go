package server

import (
	"net/http"
	"slices"
)

// Access limits a profile to some local users: a request is served only
// when the peer's uid is in UIDs or one of its groups is in GIDs. The zero
// Access (both empty) limits nothing.
type Access struct {
	UIDs []uint32
	GIDs []uint32
}

func (a Access) restricted() bool { return len(a.UIDs) > 0 || len(a.GIDs) > 0 }

// equal reports whether a and b list the same ids in the same order (a
// reload keeps a profile only when its Access is equal).
func (a Access) equal(b Access) bool {
	return slices.Equal(a.UIDs, b.UIDs) && slices.Equal(a.GIDs, b.GIDs)
}

// clone returns a copy of a sharing no memory with it, so a caller
// modifying its slices later cannot change a served profile.
func (a Access) clone() Access {
	return Access{UIDs: slices.Clone(a.UIDs), GIDs: slices.Clone(a.GIDs)}
}

// Peers identifies the local user behind a request, for Options.Access.
// Implementations must be safe for concurrent use, and should resolve once
// per connection (see package peer).
type Peers interface {
	// PeerUID returns the uid owning the client's socket.
	PeerUID(r *http.Request) (uint32, error)
	// PeerGroups returns the gids of the peer's user.
	PeerGroups(r *http.Request) ([]uint32, error)
}

// The refusals of a restricted profile. Neither says which users are
// allowed.
var (
	errForbiddenPeer = &requestError{http.StatusForbidden, codeForbidden,
		"this profile is restricted to some local users, and this connection's user is not one of them"}
	errUnknownPeer = &requestError{http.StatusForbidden, codeForbidden,
		"this profile is restricted to some local users, and this connection's user could not be identified"}
)

// checkAccess returns nil when p may be served to r's peer: always for a
// profile without Access, else only for an identified, allowed peer. It
// logs every refusal at warn, with the profile and the peer's uid.
func (s *Server) checkAccess(r *http.Request, p *profile) *requestError {
	if !p.access.restricted() {
		return nil
	}
	if s.peers == nil {
		s.log.Warn().Str("profile", p.name).Str("remote", r.RemoteAddr).
			Msg("refused: profile is restricted to some users but the daemon cannot identify peers")
		return errUnknownPeer
	}
	uid, err := s.peers.PeerUID(r)
	if err != nil {
		s.log.Warn().Str("profile", p.name).Str("remote", r.RemoteAddr).Err(err).
			Msg("refused: cannot identify the local user of the connection")
		return errUnknownPeer
	}
	if slices.Contains(p.access.UIDs, uid) {
		return nil
	}
	if len(p.access.GIDs) > 0 {
		gids, err := s.peers.PeerGroups(r)
		if err != nil {
			s.log.Warn().Str("profile", p.name).Str("remote", r.RemoteAddr).Uint32("peer_uid", uid).Err(err).
				Msg("refused: cannot read the groups of the connection's user")
			return errUnknownPeer
		}
		for _, g := range gids {
			if slices.Contains(p.access.GIDs, g) {
				return nil
			}
		}
	}
	s.log.Warn().Str("profile", p.name).Str("remote", r.RemoteAddr).Uint32("peer_uid", uid).
		Msg("refused: the connection's user may not use this profile")
	return errForbiddenPeer
}
