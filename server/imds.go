package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cwcreds/cwcreds/broker"
)

// IMDSv2 emulation: one profile (Options.IMDSProfile) answers as the EC2
// instance role, for clients that read only instance metadata:
//
//	PUT /latest/api/token                            X-aws-ec2-metadata-token-ttl-seconds: 1..21600 -> token
//	GET /latest/meta-data/iam/security-credentials/  -> the role name (the profile name), no newline
//	GET /latest/meta-data/iam/security-credentials/<role> -> the key document
//
// Every GET needs a live session token in X-aws-ec2-metadata-token (401
// otherwise); there is no IMDSv1. The server-wide guard still applies: the
// Host must be loopback or localhost, and proxy headers (X-Forwarded-For,
// Forwarded, Via) and browser headers (Origin, Sec-Fetch-*) are refused
// (real IMDS also refuses IMDSv2 traffic carrying X-Forwarded-For).
//
// This path is weaker than /v1/credentials: anyone who can reach the
// address can PUT for a session token, so the profile's keys are open to
// every local process, like an EC2 instance role.
const (
	imdsTokenPath = "/latest/api/token"
	imdsCredsPath = "/latest/meta-data/iam/security-credentials"

	hdrIMDSTTL   = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	hdrIMDSToken = "X-Aws-Ec2-Metadata-Token"

	imdsMaxTTL = 21600 // seconds, as on EC2
	// imdsMaxTokens bounds the session token store. When it is full the
	// token closest to expiry is dropped: a flood of PUTs can make clients
	// fetch a new token (every SDK does so on 401), never exhaust memory.
	imdsMaxTokens = 4096
	// imdsTokenBytes is the entropy of a session token.
	imdsTokenBytes = 32
)

const codeBadRequest = "BadRequest"

var (
	errIMDSTTL = &requestError{http.StatusBadRequest, codeBadRequest,
		"X-aws-ec2-metadata-token-ttl-seconds must be a whole number of seconds from 1 to 21600"}
	errIMDSToken = &requestError{http.StatusUnauthorized, codeUnauthorized,
		"missing, unknown or expired X-aws-ec2-metadata-token; PUT /latest/api/token first"}
)

// imds is the emulation state: the role's profile and the session tokens.
type imds struct {
	role string
	now  func() time.Time

	mu     sync.Mutex
	tokens map[[sha256.Size]byte]time.Time // SHA-256 of the token -> expiry
}

func newIMDS(role string, now func() time.Time) *imds {
	return &imds{role: role, now: now, tokens: make(map[[sha256.Size]byte]time.Time)}
}

// issue stores and returns a new session token that lives ttl.
func (m *imds) issue(ttl time.Duration) string {
	raw := make([]byte, imdsTokenBytes)
	rand.Read(raw) // never fails (Go 1.24+)
	tok := base64.RawURLEncoding.EncodeToString(raw)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.tokens) >= imdsMaxTokens {
		m.evictLocked(now)
	}
	m.tokens[sha256.Sum256([]byte(tok))] = now.Add(ttl)
	return tok
}

// evictLocked drops expired tokens, and if none had expired, the one that
// expires first.
func (m *imds) evictLocked(now time.Time) {
	var first [sha256.Size]byte
	var firstExp time.Time
	dropped := false
	for k, exp := range m.tokens {
		if !now.Before(exp) {
			delete(m.tokens, k)
			dropped = true
			continue
		}
		if firstExp.IsZero() || exp.Before(firstExp) {
			first, firstExp = k, exp
		}
	}
	if !dropped && !firstExp.IsZero() {
		delete(m.tokens, first)
	}
}

// valid reports whether tok is a live session token. Tokens are looked up
// by their SHA-256, so the time taken reveals nothing about a stored token.
func (m *imds) valid(tok string) bool {
	if tok == "" || len(tok) > 256 {
		return false
	}
	key := sha256.Sum256([]byte(tok))
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.tokens[key]
	if ok && !now.Before(exp) {
		delete(m.tokens, key)
		return false
	}
	return ok
}

// imdsRoutes mounts the emulation on r.
func (s *Server) imdsRoutes(r chi.Router) {
	r.Put(imdsTokenPath, s.imdsPutToken)
	r.With(s.imdsAuth).Get(imdsCredsPath, s.imdsListRoles)
	r.With(s.imdsAuth).Get(imdsCredsPath+"/", s.imdsListRoles)
	r.With(s.imdsAuth).Get(imdsCredsPath+"/{role}", s.imdsGetRole)
}

// imdsPutToken issues a session token for the TTL the client asks for.
func (s *Server) imdsPutToken(w http.ResponseWriter, r *http.Request) {
	vals := r.Header[hdrIMDSTTL]
	if len(vals) != 1 {
		s.writeError(w, r, errIMDSTTL)
		return
	}
	ttl, err := strconv.Atoi(vals[0])
	if err != nil || ttl < 1 || ttl > imdsMaxTTL {
		s.writeError(w, r, errIMDSTTL)
		return
	}
	tok := s.imds.issue(time.Duration(ttl) * time.Second)
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h["Cache-Control"] = hdrNoStore
	h.Set(hdrIMDSTTL, strconv.Itoa(ttl)) // Go SDKs fail without it
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(tok))
}

// imdsAuth refuses requests without a live session token.
func (s *Server) imdsAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header[hdrIMDSToken]
		if len(vals) != 1 || !s.imds.valid(vals[0]) {
			s.log.Warn().Str("remote", r.RemoteAddr).Int("token_headers", len(vals)).
				Msg("refused IMDS request: missing, unknown or expired session token")
			s.writeError(w, r, errIMDSToken)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// imdsListRoles answers the role name with no trailing newline: botocore
// uses the whole body as the name. While a reload has dropped the role's
// profile there is no role: 404, as on an instance without one.
func (s *Server) imdsListRoles(w http.ResponseWriter, r *http.Request) {
	if s.profile(s.imds.role) == nil {
		s.writeError(w, r, errNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(s.imds.role))
}

// imdsCredentials is the instance-role document. Token is always present
// and empty: S3 refuses a session token on a plain key, and botocore, the
// JS SDK and s3cmd fail without the member.
type imdsCredentials struct {
	Code            string `json:"Code"`
	LastUpdated     string `json:"LastUpdated"`
	Type            string `json:"Type"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

func (s *Server) imdsGetRole(w http.ResponseWriter, r *http.Request) {
	if chi.URLParam(r, "role") != s.imds.role {
		s.writeError(w, r, errNotFound)
		return
	}
	// Same counting, audit trail and ALLOWED_UIDS / ALLOWED_GIDS as
	// /v1/credentials; only the client token is replaced by the session
	// token checked before this handler.
	name := s.imds.role
	p := s.profile(name)
	if p == nil {
		// A reload (SetProfiles) dropped the role's profile.
		s.unknown.Count(OutcomeUnknownProfile)
		s.audit(r, name, OutcomeUnknownProfile, "").Str("via", "imds").Msg("credential request refused: the IMDS role's profile is not served")
		s.writeError(w, r, fmt.Errorf("%w: %q", broker.ErrUnknownProfile, name))
		return
	}
	if err := s.checkAccess(r, p); err != nil {
		p.requests.Count(OutcomeForbidden)
		s.audit(r, name, OutcomeForbidden, "").Str("via", "imds").Msg("credential request refused: user not allowed")
		s.sendError(w, r, err.status, err.code, err.msg)
		return
	}
	creds, err := s.keys.Get(r.Context(), name)
	if err == nil && creds == nil {
		err = errors.New("broker returned neither a key nor an error")
	}
	if err != nil {
		err = fmt.Errorf("get key for IMDS role %q: %w", name, err)
		_, code, _ := errorStatus(err)
		o := outcomeOf(code)
		p.requests.Count(o)
		s.audit(r, name, o, "").Str("via", "imds").Msg("credential request not served")
		s.writeError(w, r, err)
		return
	}
	p.requests.Count(OutcomeOK)
	s.audit(r, name, OutcomeOK, creds.AccessKeyID).Str("via", "imds").Msg("credential served")
	s.writeJSON(w, http.StatusOK, imdsDocument(creds, s.now()))
}

// imdsDocument renders creds as the instance-role document at now.
func imdsDocument(creds *broker.Credentials, now time.Time) imdsCredentials {
	exp := creds.Expires
	if exp.IsZero() {
		exp = now.Add(permanentKeyExpiration)
	}
	return imdsCredentials{
		Code:            "Success",
		LastUpdated:     formatExpiration(now),
		Type:            "AWS-HMAC",
		AccessKeyID:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		Token:           "",
		Expiration:      formatExpiration(exp),
	}
}
