package idtoken

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults for VerifierOptions.
const (
	// DefaultMinRefetch is the least time between two fetches of one
	// issuer's keys, so a flood of tokens with unknown key IDs costs the
	// issuer at most one request per interval.
	DefaultMinRefetch = 30 * time.Second
	// DefaultMaxAge is how long a fetched key set is used before the next
	// Verify that uses it also starts a refetch.
	DefaultMaxAge = time.Hour
	// fetchTimeout bounds one discovery+JWKS fetch, whatever the caller's
	// context says (the fetch is shared, so no one caller's deadline
	// applies).
	fetchTimeout = 10 * time.Second
	// maxDocumentBytes bounds a discovery document or JWKS.
	maxDocumentBytes = 1 << 20
	// minRSABits is the smallest RSA modulus accepted from a JWKS.
	minRSABits = 2048
)

// signatureAlgorithms are the algorithms Verify accepts: asymmetric
// signatures only, never "none" or a MAC.
var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// Algorithms returns the "alg" values Verify accepts.
func Algorithms() []string {
	out := make([]string, len(signatureAlgorithms))
	for i, a := range signatureAlgorithms {
		out[i] = string(a)
	}
	return out
}

// VerifierOptions configures a Verifier. The zero value is usable.
type VerifierOptions struct {
	// HTTPClient fetches discovery documents and key sets. Default: a
	// client with a 10 s timeout. Redirects are followed only to URLs that
	// pass the same rules as the configured ones.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// JWKSURL, if set, is used for every issuer instead of OIDC discovery.
	JWKSURL string
	// MinRefetch is the least time between two fetches of one issuer's
	// keys, whatever triggered them (default DefaultMinRefetch).
	MinRefetch time.Duration
	// MaxAge is how long a fetched key set is used before a Verify that uses
	// it starts a refetch in the background (default DefaultMaxAge).
	MaxAge time.Duration
}

// Verifier verifies tokens' signatures against their issuers' published
// keys and checks their claims against a Policy. It is safe for concurrent
// use by multiple goroutines.
//
// Keys are fetched on first use, per issuer: with OIDC discovery
// (GET <iss>/.well-known/openid-configuration, whose "issuer" must equal iss,
// then its jwks_uri), or from VerifierOptions.JWKSURL. They are fetched again
// when a token names a kid the cached set lacks, and when the set is older
// than MaxAge; in all cases at most once per MinRefetch per issuer, with
// concurrent callers sharing one fetch. A failed fetch keeps the keys
// already held.
type Verifier struct {
	policy     Policy
	client     *http.Client
	now        func() time.Time
	minRefetch time.Duration
	maxAge     time.Duration
	// sources maps each allowed issuer to its key source. With a JWKSURL
	// every issuer maps to the same one.
	sources map[string]*keySource
}

// NewVerifier returns a Verifier for p. It checks p (Policy.Validate) and
// the URLs it will fetch: each issuer (for discovery) or JWKSURL must be
// https, or http to a loopback host. It fetches nothing.
func NewVerifier(p Policy, o VerifierOptions) (*Verifier, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if o.MinRefetch < 0 || o.MaxAge < 0 {
		return nil, fmt.Errorf("idtoken verifier: negative MinRefetch %v or MaxAge %v", o.MinRefetch, o.MaxAge)
	}
	v := &Verifier{
		policy:     Policy{Issuers: slices.Clone(p.Issuers), Audience: p.Audience, Leeway: p.Leeway},
		now:        o.Now,
		minRefetch: o.MinRefetch,
		maxAge:     o.MaxAge,
		sources:    make(map[string]*keySource, len(p.Issuers)),
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.minRefetch == 0 {
		v.minRefetch = DefaultMinRefetch
	}
	if v.maxAge == 0 {
		v.maxAge = DefaultMaxAge
	}
	client := &http.Client{Timeout: fetchTimeout}
	if o.HTTPClient != nil {
		c := *o.HTTPClient
		client = &c
	}
	next := client.CheckRedirect
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := checkURL(req.URL); err != nil {
			return fmt.Errorf("redirect refused: %w", err)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	v.client = client

	if o.JWKSURL != "" {
		if err := checkURLString(o.JWKSURL); err != nil {
			return nil, fmt.Errorf("idtoken verifier: JWKS URL: %w", err)
		}
		shared := &keySource{v: v, jwksURL: o.JWKSURL}
		for _, iss := range p.Issuers {
			v.sources[iss] = shared
		}
		return v, nil
	}
	for _, iss := range p.Issuers {
		if err := checkURLString(iss); err != nil {
			return nil, fmt.Errorf("idtoken verifier: issuer (used for OIDC discovery; set a JWKS URL otherwise): %w", err)
		}
		v.sources[iss] = &keySource{v: v, issuer: iss}
	}
	return v, nil
}

// checkURLString parses s and applies checkURL.
func checkURLString(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	return checkURL(u)
}

// checkURL accepts an absolute https URL, or an http URL whose host is
// loopback (localhost, 127.0.0.0/8, ::1): keys fetched in the clear from
// anywhere else could be replaced by anyone on the path.
func checkURL(u *url.URL) error {
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q has no host", u.Redacted())
	}
	if u.User != nil {
		return fmt.Errorf("%q carries user information", u.Redacted())
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q is http to a host that is not loopback; use https", u.Redacted())
	default:
		return fmt.Errorf("%q: scheme must be https (or http to a loopback host)", u.Redacted())
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Verify parses raw, refuses an algorithm not in Algorithms(), checks the
// claims against the Policy, and then checks the signature with the
// issuer's key named by kid (with no kid, each of the issuer's keys that
// fits the algorithm). Claims are checked before the signature so that a
// token from an issuer that is not allowed never causes a fetch. ctx bounds
// how long Verify waits for a key fetch (the fetch itself is shared and runs
// on). Every error is an *Error.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	c, payload, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if !allowedAlgorithm(c.Algorithm) {
		return nil, refuse(ReasonAlgorithm, "alg %s is not one of %s", quote(c.Algorithm), strings.Join(Algorithms(), ", "))
	}
	if err := v.policy.Check(c, v.now()); err != nil {
		return nil, err
	}
	jws, err := jose.ParseSignedCompact(raw, signatureAlgorithms)
	if err != nil {
		return nil, refuse(ReasonMalformed, "the JOSE parser refused the token")
	}
	if len(jws.Signatures) != 1 {
		return nil, refuse(ReasonMalformed, "want one signature, got %d", len(jws.Signatures))
	}
	// The JOSE parser and parse read the same header; if they disagree (a
	// duplicate or differently-cased member), refuse rather than pick one.
	if h := jws.Signatures[0].Header; string(h.Algorithm) != c.Algorithm || h.KeyID != c.KeyID {
		return nil, refuse(ReasonMalformed, "ambiguous header")
	}
	src := v.sources[c.Issuer] // present: Check allowed the issuer
	keys, err := src.candidates(ctx, c.Algorithm, c.KeyID)
	if err != nil {
		return nil, err
	}
	for i := range keys {
		got, err := jws.Verify(&keys[i])
		if err != nil {
			continue
		}
		if !bytes.Equal(got, payload) {
			return nil, refuse(ReasonMalformed, "signed payload differs from the parsed claims")
		}
		return c, nil
	}
	if c.KeyID == "" {
		return nil, refuse(ReasonSignature, "no key of the issuer verifies the signature (token has no kid)")
	}
	return nil, refuse(ReasonSignature, "the issuer's key %s does not verify the signature", quote(c.KeyID))
}

func allowedAlgorithm(alg string) bool {
	for _, a := range signatureAlgorithms {
		if string(a) == alg {
			return true
		}
	}
	return false
}

// keySource holds one issuer's (or one JWKS URL's) keys and fetches them.
type keySource struct {
	v *Verifier
	// issuer is the issuer whose discovery document names the JWKS; "" when
	// jwksURL is fixed.
	issuer string

	mu sync.Mutex
	// jwksURL is fixed, or learnt by discovery (and forgotten when a fetch
	// from it fails, so the next fetch discovers again).
	jwksURL string
	// keys is the last successfully fetched set (nil before the first),
	// fetchedAt when it was fetched.
	keys      []jose.JSONWebKey
	fetchedAt time.Time
	// lastStart is when the last fetch started; lastErr is its error,
	// or nil once it succeeded.
	lastStart time.Time
	lastErr   error
	// inflight is the running fetch, if any; it is closed when done.
	inflight chan struct{}
}

// candidates returns the keys that may have signed a token with alg and kid,
// fetching the set (once, shared, rate-limited) if it has none of them or
// is older than MaxAge.
func (s *keySource) candidates(ctx context.Context, alg, kid string) ([]jose.JSONWebKey, error) {
	waited := false
	for {
		s.mu.Lock()
		now := s.v.now()
		keys := matching(s.keys, alg, kid)
		stale := s.keys != nil && !now.Before(s.fetchedAt.Add(s.v.maxAge))
		if len(keys) > 0 && !stale {
			s.mu.Unlock()
			return keys, nil
		}
		done := s.inflight
		if done == nil && !waited && (s.lastStart.IsZero() || !now.Before(s.lastStart.Add(s.v.minRefetch))) {
			done = s.start(ctx, now)
		}
		lastErr, have := s.lastErr, s.keys != nil
		s.mu.Unlock()

		if len(keys) > 0 {
			// Stale but usable: the refetch (if one was allowed) runs
			// in the background and this call uses the keys it has.
			return keys, nil
		}
		if done == nil || waited {
			return nil, s.noKey(kid, alg, have, lastErr)
		}
		select {
		case <-done:
			waited = true
		case <-ctx.Done():
			return nil, &Error{Reason: ReasonKeys, Detail: "gave up waiting for the issuer's keys", err: ctx.Err()}
		}
	}
}

// noKey is the refusal when no cached key fits: the keys are unavailable if
// the last fetch failed (or none ever succeeded), else the kid is unknown.
func (s *keySource) noKey(kid, alg string, have bool, lastErr error) error {
	if lastErr != nil || !have {
		if lastErr == nil {
			lastErr = errors.New("no key set fetched yet")
		}
		return &Error{Reason: ReasonKeys, Detail: s.name() + ": " + lastErr.Error(), err: lastErr}
	}
	if kid == "" {
		return refuse(ReasonSignature, "the issuer has no key for alg %s", quote(alg))
	}
	return refuse(ReasonSignature, "the issuer has no key %s for alg %s", quote(kid), quote(alg))
}

func (s *keySource) name() string {
	if s.issuer != "" {
		return "keys of issuer " + quote(s.issuer)
	}
	return "keys at " + quote(s.jwksURL)
}

// start begins a fetch; s.mu is held. The fetch runs detached from the
// caller's cancellation (others may wait for it too) under its own timeout.
func (s *keySource) start(ctx context.Context, now time.Time) chan struct{} {
	done := make(chan struct{})
	s.inflight = done
	s.lastStart = now
	jwksURL := s.jwksURL
	go func() {
		defer close(done)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		keys, discovered, err := s.fetch(fctx, jwksURL)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.inflight = nil
		s.lastErr = err
		if err != nil {
			if s.issuer != "" {
				s.jwksURL = "" // discover again next time
			}
			return
		}
		s.jwksURL = discovered
		s.keys = keys
		s.fetchedAt = s.v.now()
	}()
	return done
}

// fetch discovers the JWKS URL if jwksURL is "" and fetches the key set.
func (s *keySource) fetch(ctx context.Context, jwksURL string) ([]jose.JSONWebKey, string, error) {
	if jwksURL == "" {
		u, err := s.discover(ctx)
		if err != nil {
			return nil, "", err
		}
		jwksURL = u
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := s.v.getJSON(ctx, jwksURL, &set); err != nil {
		return nil, "", fmt.Errorf("fetch JWKS: %w", err)
	}
	keys := make([]jose.JSONWebKey, 0, len(set.Keys))
	for _, rk := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(rk); err != nil {
			continue // a key type go-jose does not know; the others may do
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub := k.Public() // never keep private material a careless issuer published
		if !pub.Valid() || !usable(pub.Key) {
			continue
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, "", fmt.Errorf("JWKS at %s has no usable signing key (of %d)", quote(jwksURL), len(set.Keys))
	}
	return keys, jwksURL, nil
}

// discover reads the issuer's OIDC discovery document and returns its
// jwks_uri.
func (s *keySource) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(s.issuer, "/") + "/.well-known/openid-configuration"
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := s.v.getJSON(ctx, u, &doc); err != nil {
		return "", fmt.Errorf("OIDC discovery: %w", err)
	}
	if doc.Issuer != s.issuer {
		return "", fmt.Errorf("OIDC discovery: document at %s names issuer %s, want %s", quote(u), quote(doc.Issuer), quote(s.issuer))
	}
	if doc.JWKSURI == "" {
		return "", fmt.Errorf("OIDC discovery: document at %s has no jwks_uri", quote(u))
	}
	if err := checkURLString(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("OIDC discovery: jwks_uri: %w", err)
	}
	return doc.JWKSURI, nil
}

// getJSON GETs u and decodes a JSON reply of at most maxDocumentBytes.
func (v *Verifier) getJSON(ctx context.Context, u string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", quote(u), err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", quote(u), resp.StatusCode)
	}
	if len(body) > maxDocumentBytes {
		return fmt.Errorf("GET %s: reply larger than %d bytes", quote(u), maxDocumentBytes)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("GET %s: reply is not the expected JSON: %w", quote(u), err)
	}
	return nil
}

// usable reports whether k is a public key of a type and size Verify uses.
func usable(k any) bool {
	switch k := k.(type) {
	case *rsa.PublicKey:
		return k.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey:
		return k.Curve == elliptic.P256() || k.Curve == elliptic.P384() || k.Curve == elliptic.P521()
	case ed25519.PublicKey:
		return true
	}
	return false
}

// matching returns the keys in keys that may verify a token with alg and
// kid: the same kid (any, when kid is ""), a key "alg" that is absent or
// equal, and a key type that fits alg.
func matching(keys []jose.JSONWebKey, alg, kid string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		if fits(k.Key, alg) {
			out = append(out, k)
		}
	}
	return out
}

// fits reports whether key is of the type alg needs.
func fits(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}
