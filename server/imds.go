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
	"github.com/cwcreds/cwcreds/broker/cwapi"
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
	// imdsMaxTokensPerPeer is how many live session tokens one local user
	// (one uid; one remote address when the uid is unknown) may hold. A
	// PUT beyond it drops that user's oldest token: a user flooding PUTs
	// only evicts their own tokens. An SDK holds one token per process and
	// re-PUTs on 401, so 64 covers a user's busy processes, and a user with
	// more just re-issues.
	imdsMaxTokensPerPeer = 64
	// imdsMaxTokens bounds the whole store (64 users at their quota, a few
	// hundred KiB). When it is full the oldest token of all is dropped;
	// reaching that takes 64 distinct uids each at its quota.
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
//
// The store is fair per peer and O(1) per operation: every token is in one
// map (by SHA-256), in its owner's FIFO and in a global FIFO (both in
// issue order, intrusive doubly linked lists). A PUT drops the owner's
// oldest token when the owner is at imdsMaxTokensPerPeer, else the oldest
// of all when the store is at imdsMaxTokens; a lookup drops an expired
// token. Nothing ever scans the store.
type imds struct {
	role string
	now  func() time.Time

	mu     sync.Mutex
	tokens map[[sha256.Size]byte]*imdsSession
	owners map[peerKey]*imdsOwner
	all    imdsList // every token, oldest first
}

// imdsSession is one live session token.
type imdsSession struct {
	key   [sha256.Size]byte
	exp   time.Time
	owner *imdsOwner
	// Links in the global list (all) and in the owner's list.
	prev, next           *imdsSession
	ownerPrev, ownerNext *imdsSession
}

// imdsOwner is one peer's tokens, oldest first.
type imdsOwner struct {
	peer        peerKey
	first, last *imdsSession
	n           int
}

// imdsList is the global list of tokens, oldest first.
type imdsList struct {
	first, last *imdsSession
}

func newIMDS(role string, now func() time.Time) *imds {
	return &imds{role: role, now: now, tokens: make(map[[sha256.Size]byte]*imdsSession), owners: make(map[peerKey]*imdsOwner)}
}

// issue stores and returns a new session token for peer that lives ttl.
func (m *imds) issue(peer peerKey, ttl time.Duration) string {
	raw := make([]byte, imdsTokenBytes)
	rand.Read(raw) // never fails (Go 1.24+)
	tok := base64.RawURLEncoding.EncodeToString(raw)
	t := &imdsSession{key: sha256.Sum256([]byte(tok)), exp: m.now().Add(ttl)}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch o := m.owners[peer]; {
	case o != nil && o.n >= imdsMaxTokensPerPeer:
		m.dropLocked(o.first)
	case len(m.tokens) >= imdsMaxTokens:
		m.dropLocked(m.all.first) // may be peer's last: look its owner up after
	}
	o := m.owners[peer]
	if o == nil {
		o = &imdsOwner{peer: peer}
		m.owners[peer] = o
	}
	t.owner = o
	// Append to the global list and to the owner's.
	t.prev = m.all.last
	if m.all.last != nil {
		m.all.last.next = t
	} else {
		m.all.first = t
	}
	m.all.last = t
	t.ownerPrev = o.last
	if o.last != nil {
		o.last.ownerNext = t
	} else {
		o.first = t
	}
	o.last = t
	o.n++
	m.tokens[t.key] = t
	return tok
}

// dropLocked removes t from the map and both lists, and its owner once it
// holds no token.
func (m *imds) dropLocked(t *imdsSession) {
	delete(m.tokens, t.key)
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		m.all.first = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		m.all.last = t.prev
	}
	o := t.owner
	if t.ownerPrev != nil {
		t.ownerPrev.ownerNext = t.ownerNext
	} else {
		o.first = t.ownerNext
	}
	if t.ownerNext != nil {
		t.ownerNext.ownerPrev = t.ownerPrev
	} else {
		o.last = t.ownerPrev
	}
	o.n--
	if o.n == 0 {
		delete(m.owners, o.peer)
	}
	t.prev, t.next, t.ownerPrev, t.ownerNext, t.owner = nil, nil, nil, nil, nil
}

// valid reports whether tok is a live session token. Tokens are looked up
// by their SHA-256, so the time taken reveals nothing about a stored token.
// A session token is a bearer token, as on EC2: any peer holding it may
// use it.
func (m *imds) valid(tok string) bool {
	if tok == "" || len(tok) > 256 {
		return false
	}
	key := sha256.Sum256([]byte(tok))
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[key]
	if ok && !now.Before(t.exp) {
		m.dropLocked(t)
		return false
	}
	return ok
}

// imdsRoutes mounts the emulation on r.
func (s *Server) imdsRoutes(r chi.Router) {
	// Loopback only: a pod reaching the daemon must not get the node's
	// instance role, which needs no token at all.
	r = r.With(s.loopbackOnly)
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
	tok := s.imds.issue(s.peerOf(r), time.Duration(ttl)*time.Second)
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
			s.lines.event(s.now(), s.log.Warn).Str("remote", r.RemoteAddr).Int("token_headers", len(vals)).
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
		s.refuse(w, r, s.unknown, name, fmt.Errorf("%w: %q", broker.ErrUnknownProfile, name),
			"credential request refused: the IMDS role's profile is not served")
		return
	}
	if err := s.checkAccess(r, p); err != nil {
		s.refuse(w, r, p.requests, name, err, "credential request refused: user not allowed")
		return
	}
	creds, err := s.key(r.Context(), p)
	if err == nil && creds == nil {
		err = errors.New("broker returned neither a key nor an error")
	}
	if err != nil {
		s.refuse(w, r, p.requests, name, fmt.Errorf("get key for IMDS role %q: %w", name, err), "credential request not served")
		return
	}
	p.requests.Count(OutcomeOK)
	s.auditServed(r, name, creds.AccessKeyID, nil)
	s.writeJSON(w, http.StatusOK, imdsDocument(creds, s.now()))
}

// imdsDocument renders creds as the instance-role document at now.
func imdsDocument(creds *cwapi.Credentials, now time.Time) imdsCredentials {
	return imdsCredentials{
		Code:            "Success",
		LastUpdated:     formatExpiration(now),
		Type:            "AWS-HMAC",
		AccessKeyID:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		Token:           "",
		Expiration:      formatExpiration(creds.Expires),
	}
}
