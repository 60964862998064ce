package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/cwcreds/cwcreds/broker"
)

// KeyRevoker replaces a profile's current key; *broker.Cache satisfies it.
// It never takes an upstream credential: RevokeOwn revokes with the
// profile's own, and for a key its caller revoked upstream itself
// ForgetRevoked only stops serving it and mints a new one.
type KeyRevoker interface {
	RevokeOwn(ctx context.Context, profile string) (*broker.Revocation, error)
	ForgetRevoked(ctx context.Context, profile, accessKeyID string) (*broker.Revocation, error)
}

// maxRevokeBody bounds the revoke request body: a key id in JSON.
const maxRevokeBody = 4 << 10

// Refusals of the admin endpoint.
var (
	errAdminUnauthorized = &requestError{http.StatusUnauthorized, codeUnauthorized,
		"missing or invalid Authorization header: send the daemon's admin token (the admin-token file in its runtime directory)"}
	errBadRevokeBody = &requestError{http.StatusBadRequest, codeBadRevokeRequest,
		`the body must be empty (revoke with the profile's own credential) or JSON {"revokedAccessKeyId":"<key id>"} ` +
			`(a key you revoked upstream yourself: the daemon stops serving it and mints a new one)`}
	errUpstreamTokenRefused = &requestError{http.StatusBadRequest, codeUpstreamTokenRefused,
		"the daemon never takes a CoreWeave API token over its socket: revoke the key upstream yourself " +
			"(cwcreds revoke --token-file does), then send {\"revokedAccessKeyId\":\"<key id>\"}"}
)

// codeUpstreamTokenRefused: a revoke request carried an API token.
const codeUpstreamTokenRefused = "UpstreamTokenRefused"

// revokeRequest is the optional body of POST /v1/profiles/{profile}/revoke.
type revokeRequest struct {
	// RevokedAccessKeyID is a key the caller revoked upstream itself.
	RevokedAccessKeyID string `json:"revokedAccessKeyId"`
	// APIToken is never accepted (the old protocol sent one): its presence
	// is refused, and its value never read, logged or echoed.
	APIToken json.RawMessage `json:"apiToken"`
}

// validKeyID reports whether id looks like an access key id: 1 to 128
// letters and digits.
func validKeyID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// revokeKey is POST /v1/profiles/{profile}/revoke: with the admin token,
// revoke the profile's current key upstream with its own credential (empty
// body), or stop serving a key the caller revoked upstream itself
// ({"revokedAccessKeyId"}), and mint a new one. A body carrying an API
// token is refused unused: no upstream credential crosses the daemon's
// socket. The answer is a broker.Revocation.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	auth := r.Header["Authorization"]
	if s.revoker == nil || len(auth) != 1 || !tokenMatches(auth[0], s.adminToken) {
		s.lines.event(s.now(), s.log.Warn).Bool("audit", true).Str("event", "revoke_refused").Str("peer", r.RemoteAddr).
			Int("authorization_headers", len(auth)).Msg("refused revoke request: wrong or missing admin token")
		s.writeError(w, r, errAdminUnauthorized)
		return
	}
	var req revokeRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRevokeBody))
	if err != nil {
		s.writeError(w, r, errBadRevokeBody)
		return
	}
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || dec.More() {
			s.writeError(w, r, errBadRevokeBody) // never quote the body: it holds a token
			return
		}
	}
	if req.APIToken != nil {
		clear(body)
		s.lines.event(s.now(), s.log.Warn).Bool("audit", true).Str("event", "revoke_refused").Str("peer", r.RemoteAddr).
			Msg("refused revoke request carrying an upstream API token; the token was not used")
		s.writeError(w, r, errUpstreamTokenRefused)
		return
	}
	if len(body) > 0 && !validKeyID(req.RevokedAccessKeyID) {
		s.writeError(w, r, errBadRevokeBody)
		return
	}
	name := chi.URLParam(r, "profile")
	var rev *broker.Revocation
	if req.RevokedAccessKeyID != "" {
		rev, err = s.revoker.ForgetRevoked(r.Context(), name, req.RevokedAccessKeyID)
	} else {
		rev, err = s.revoker.RevokeOwn(r.Context(), name)
	}
	if err == nil && rev == nil {
		err = errors.New("broker returned neither a revocation nor an error")
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Name the profile only once the broker has accepted it as configured.
	ev := s.log.Warn().Bool("audit", true).Str("event", "revoke_request").Str("profile", rev.Profile).
		Str("revoked_access_key_id", rev.RevokedAccessKeyID).Str("peer", r.RemoteAddr).Bool("revoked_by_caller", req.RevokedAccessKeyID != "").Bool("not_held", rev.NotHeld)
	if rev.NewAccessKeyID != "" {
		ev = ev.Str("new_access_key_id", rev.NewAccessKeyID)
	} else if !rev.NotHeld {
		ev = ev.Str("mint_error", rev.MintError)
	}
	ev.Msg("key revoked on admin request")
	s.writeJSON(w, http.StatusOK, rev)
}
