package server

// The credential route, GET /v1/credentials/{profile}, in the order a
// request meets it: the route, the handler (profile, access, client token,
// key), the one place a request that gets no key is answered, the client
// token check and the rendering of the response body. The guards every
// route shares are in guard.go; errorStatus (respond.go) maps an error to
// its status.

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/idtoken"
)

// credentialsPrefix is the credential route's path up to the profile name.
const credentialsPrefix = "/v1/credentials/"

// getCredentials is GET /v1/credentials/{profile} as routed by chi.
func (s *Server) getCredentials(w http.ResponseWriter, r *http.Request) {
	s.serveCredentials(w, r, chi.URLParam(r, "profile"))
}

// getCredentialsFast is the same route outside chi (see ServeHTTP), which
// sends it only paths credentialsName accepts.
func (s *Server) getCredentialsFast(w http.ResponseWriter, r *http.Request) {
	name, _ := credentialsName(r.URL.Path)
	s.serveCredentials(w, r, name)
}

// credentialsName returns the profile name of a credential route path, as
// chi's {profile} would match it: a non-empty final segment after
// credentialsPrefix.
func credentialsName(path string) (string, bool) {
	name, ok := strings.CutPrefix(path, credentialsPrefix)
	if !ok || name == "" || strings.IndexByte(name, '/') >= 0 {
		return "", false
	}
	return name, true
}

// serveCredentials serves the key of the profile called name (request
// input): unknown profile 404, then a user the profile is restricted against
// 403, then bad token 401, then the broker's answer.
func (s *Server) serveCredentials(w http.ResponseWriter, r *http.Request, name string) {
	p := s.profile(name)
	if p == nil {
		// The requested name is request input, not a configured name: it
		// is not logged as a profile.
		s.refuse(w, r, s.unknown, "", fmt.Errorf("%w: %q", broker.ErrUnknownProfile, name),
			"credential request refused: unknown profile")
		return
	}
	// A restricted profile refuses other users before looking at the token,
	// and even with the right one.
	if err := s.checkAccess(r, p); err != nil {
		s.refuse(w, r, p.requests, name, err, "credential request refused: user not allowed")
		return
	}
	if p.entry.Workload() {
		s.serveWorkload(w, r, p)
		return
	}
	// Exactly one Authorization header; indexing the map directly skips
	// Header.Get's key canonicalisation on the hot path.
	if auth := r.Header["Authorization"]; len(auth) != 1 || !tokenMatches(auth[0], p.token) {
		s.refuse(w, r, p.requests, name, errUnauthorized, "credential request refused: wrong or missing client token")
		return
	}
	creds, err := s.key(r.Context(), p)
	if err == nil && creds == nil {
		err = errors.New("broker returned neither a key nor an error")
	}
	var body []byte
	if err != nil {
		err = fmt.Errorf("get key for profile %q: %w", name, err)
	} else if body, err = p.body(creds); err != nil {
		err = fmt.Errorf("render key for profile %q: %w", name, err)
	}
	if err != nil {
		s.refuse(w, r, p.requests, name, err, "credential request not served")
		return
	}
	p.requests.Count(OutcomeOK)
	s.auditServed(r, name, creds.AccessKeyID, nil)
	writeBody(w, http.StatusOK, body)
}

// serveWorkload serves a workload profile (source workload-oidc): the
// Authorization header is the caller's own OIDC token, exactly as
// CoreWeave's container-credentials endpoint takes it, and the broker
// answers with its identity's key. The Expiration it shows is the key's or
// the token's, whichever comes first: the SDK then fetches again, reading
// its token file, before the token it presented expires, so a key is never
// used on the strength of an expired token, and a pod that is gone stops
// getting keys at its token's expiry. A workload profile holds a key per
// identity: their bodies are kept rendered in p.bodies.
func (s *Server) serveWorkload(w http.ResponseWriter, r *http.Request, p *profile) {
	auth := r.Header["Authorization"]
	if len(auth) != 1 || auth[0] == "" {
		s.refuse(w, r, p.requests, p.name, errNoWorkloadToken, "credential request refused: no workload token")
		return
	}
	creds, id, err := p.entry.GetFor(r.Context(), s.workloadPeer(r), auth[0])
	if err != nil {
		s.refuse(w, r, p.requests, p.name, fmt.Errorf("get key for profile %q: %w", p.name, err), workloadRefusal(err))
		return
	}
	until := creds.Expires
	if id.Expires.Before(until) {
		until = id.Expires
	}
	body, err := p.bodies.body(creds, until)
	if err != nil {
		s.refuse(w, r, p.requests, p.name, fmt.Errorf("render key for profile %q: %w", p.name, err), "credential request not served")
		return
	}
	p.requests.Count(OutcomeOK)
	s.auditServed(r, p.name, creds.AccessKeyID, id)
	writeBody(w, http.StatusOK, body)
}

// workloadPeer is r's peer as the broker bounds it (broker.Peer): its
// local user, else its address (a pod's); every loopback peer whose user
// is unknown is one (see peerOf).
func (s *Server) workloadPeer(r *http.Request) broker.Peer {
	k := s.peerOf(r)
	return broker.Peer{UID: k.uid, HasUID: k.hasUID, Addr: k.addr}
}

// workloadRefusal is the audit trail's reason for a workload request that
// got no key: the token's refusal reason, or the broker's failure.
func workloadRefusal(err error) string {
	if r := idtoken.ReasonOf(err); r != "" {
		return "token refused: " + string(r)
	}
	if errors.Is(err, broker.ErrTokenExpired) {
		return "token refused: " + string(idtoken.ReasonExpired)
	}
	if errors.Is(err, broker.ErrTooManyPendingTokens) {
		return "token refused: too many new tokens from this peer without a key"
	}
	return "credential request not served"
}

// refuse answers a credential request (of this route or IMDS's) that gets
// no key. err alone decides the answer: errorStatus maps it, once, to the
// status, code and message, and the outcome counted in requests and
// recorded in the audit trail (with why, and profile unless it is "")
// follows from that code. Only our own failures (500) log a line of their
// own per request; every other refusal is summarised by the audit trail,
// so a flood of them costs a line per AuditInterval.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, requests RequestCounter, profile string, err error, why string) {
	status, code, msg := errorStatus(err)
	o := outcomeOf(code)
	requests.Count(o)
	switch err {
	case errUnknownPeer:
		why = "credential request refused: user not identified"
	case errPodNotAllowed, errPodRestricted:
		why = whyNotForPods
	}
	s.auditRefused(r, profile, o, why)
	if o == OutcomeError || (o != OutcomeForbidden && s.debugEnabled()) {
		s.logError(r, err, status, msg)
	}
	s.sendError(w, r, status, code, msg)
}

// tokenMatches reports whether the presented Authorization value equals the
// profile's client token, in time independent of where they differ. An
// empty configured token matches nothing.
//
// subtle.ConstantTimeCompare returns at once when the lengths differ, so it
// can reveal the token's length, which is public anyway for generated tokens
// (64 hex characters); the content stays protected.
func tokenMatches(presented, want string) bool {
	if want == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(presented), []byte(want)) == 1
}

// expirationLayout is the Expiration format every SDK parses: UTC, whole
// seconds, literal Z.
const expirationLayout = "2006-01-02T15:04:05Z"

// renderedKey holds the response body of one key, rendered at most once:
// the first caller of get renders it and concurrent callers wait for that
// render instead of repeating it. Once rendered it is immutable.
type renderedKey struct {
	creds *cwapi.Credentials
	// until is the Expiration shown; zero means the key's own.
	until time.Time
	once  sync.Once
	// Set by once, read only after it.
	body []byte
	err  error
}

// workloadBodies keeps the rendered bodies of a workload profile's keys,
// one per identity, so that a hit renders nothing and allocates nothing.
// It is a direct-mapped table: a key's slot is chosen by a hash of its id,
// and holds that key's renderedKey (matched by key pointer, as
// profile.body does) until another key that hashes there replaces it. So
// its size is fixed (workloadBodySlots pointers, whatever the number of
// identities) and it needs no eviction; more hot identities than slots
// only means some requests render their body again, as they all did
// before. A slot keeps its last key (an expired or dropped one, perhaps)
// in memory until replaced: memory the daemon already held those keys in.
type workloadBodies struct {
	seed  maphash.Seed
	slots [workloadBodySlots]atomic.Pointer[renderedKey]
}

const workloadBodySlots = 1024

func newWorkloadBodies() *workloadBodies { return &workloadBodies{seed: maphash.MakeSeed()} }

// body returns the response body of creds with until as its Expiration,
// rendering it at most once per slot tenure. The slot is chosen by both:
// in identity sharing, tokens of one key expire at different times.
func (b *workloadBodies) body(creds *cwapi.Credentials, until time.Time) ([]byte, error) {
	h := maphash.String(b.seed, creds.AccessKeyID) ^ uint64(until.Unix())*0x9e3779b97f4a7c15
	slot := &b.slots[h%workloadBodySlots]
	k := slot.Load()
	if k == nil || k.creds != creds || !k.until.Equal(until) {
		k = &renderedKey{creds: creds, until: until}
		slot.Store(k)
	}
	k.once.Do(func() { k.render(nil) })
	return k.body, k.err
}

// credentialsBody is the container-credentials response. Field order is the
// wire order.
type credentialsBody struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

// body returns the response body for creds. It renders once per key
// pointer: the first request for a new key swaps in a fresh holder, and
// every concurrent request for that key waits on the holder's single
// render. The hit path is one atomic load and no allocation.
func (p *profile) body(creds *cwapi.Credentials) ([]byte, error) {
	for {
		k := p.rendered.Load()
		if k == nil || k.creds != creds {
			fresh := &renderedKey{creds: creds}
			if !p.rendered.CompareAndSwap(k, fresh) {
				continue // another request swapped first: use (or replace) its holder
			}
			k = fresh
		}
		k.once.Do(func() { k.render(p.onRender) })
		return k.body, k.err
	}
}

// render encodes k.creds, calling onRender first when set. A failure is
// kept: encoding the same key fails again. The broker never hands out a
// zero Expires (KeyGetter), so a key is rendered once.
func (k *renderedKey) render(onRender func()) {
	if onRender != nil {
		onRender()
	}
	until := k.until
	if until.IsZero() {
		until = k.creds.Expires
	}
	k.body, k.err = renderBody(k.creds, until)
}

// renderBody encodes creds as the container-credentials response, with
// until as its Expiration.
func renderBody(creds *cwapi.Credentials, until time.Time) ([]byte, error) {
	return json.Marshal(credentialsBody{
		AccessKeyID:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		Token:           "",
		Expiration:      formatExpiration(until),
	})
}

// formatExpiration formats t as UTC truncated to whole seconds.
func formatExpiration(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format(expirationLayout)
}
