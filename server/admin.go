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

// KeyRevoker revokes a profile's current key upstream and mints a new one;
// *broker.Cache satisfies it. apiToken is the CoreWeave API access token to
// revoke with, "" for the profile's own.
type KeyRevoker interface {
	Revoke(ctx context.Context, profile, apiToken string) (*broker.Revocation, error)
}

// maxRevokeBody bounds the revoke request body: an API access token in JSON.
const maxRevokeBody = 64 << 10

// Refusals of the admin endpoint.
var (
	errAdminUnauthorized = &requestError{http.StatusUnauthorized, codeUnauthorized,
		"missing or invalid Authorization header: send the daemon's admin token (the admin-token file in its runtime directory)"}
	errBadRevokeBody = &requestError{http.StatusBadRequest, codeBadRevokeRequest,
		`the body must be empty or JSON {"apiToken":"<CoreWeave API access token>"}`}
)

// revokeRequest is the optional body of POST /v1/profiles/{profile}/revoke.
type revokeRequest struct {
	// APIToken is the API access token to revoke with. It is never logged
	// or echoed.
	APIToken string `json:"apiToken"`
}

// revokeKey is POST /v1/profiles/{profile}/revoke: with the admin token,
// revoke the profile's current key upstream, stop serving it and mint a
// new one. The answer is a broker.Revocation.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	auth := r.Header["Authorization"]
	if s.revoker == nil || len(auth) != 1 || !tokenMatches(auth[0], s.adminToken) {
		s.log.Warn().Bool("audit", true).Str("event", "revoke_refused").Str("peer", r.RemoteAddr).
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
	name := chi.URLParam(r, "profile")
	rev, err := s.revoker.Revoke(r.Context(), name, req.APIToken)
	if err == nil && rev == nil {
		err = errors.New("broker returned neither a revocation nor an error")
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Name the profile only once the broker has accepted it as configured.
	ev := s.log.Warn().Bool("audit", true).Str("event", "revoke_request").Str("profile", rev.Profile).
		Str("revoked_access_key_id", rev.RevokedAccessKeyID).Str("peer", r.RemoteAddr).Bool("own_token", req.APIToken == "")
	if rev.NewAccessKeyID != "" {
		ev = ev.Str("new_access_key_id", rev.NewAccessKeyID)
	} else {
		ev = ev.Str("mint_error", rev.MintError)
	}
	ev.Msg("key revoked on admin request")
	s.writeJSON(w, http.StatusOK, rev)
}
