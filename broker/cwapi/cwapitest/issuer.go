package cwapitest

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// DefaultAudience is the audience CoreWeave recommends for workload identity
// federation, and the default aud of an Issuer's tokens.
const DefaultAudience = "https://coreweave.com/iam"

// Paths of an issuer's documents, relative to its URL. The JWKS path is the
// one the Kubernetes API server uses.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/openid/v1/jwks"
)

// Signing algorithms an Issuer signs with and the emulator accepts.
const (
	RS256 = string(jose.RS256)
	ES256 = string(jose.ES256)
)

// verifyAlgs is the emulator's algorithm allow-list: never "none", never HMAC.
var verifyAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256}

// IssuerOptions configures an Issuer. The zero value is ready to use.
type IssuerOptions struct {
	// Now reads the clock for iat, nbf and exp. Default time.Now.
	Now func() time.Time
	// Rand supplies the randomness of jti claims. Keys always come from
	// crypto/rand. Default crypto/rand.Reader.
	Rand io.Reader
}

// TokenSpec describes a token for Issuer.Token. The zero value is a token
// for the "default" service account of the "default" namespace, audience
// DefaultAudience, valid for an hour from now, signed with RS256.
type TokenSpec struct {
	// Subject is the sub claim. Default: "system:serviceaccount:<ns>:<sa>".
	Subject string
	// Audience is the aud claim, always a JSON array as Kubernetes issues
	// it. Default [DefaultAudience].
	Audience []string
	// IssuedAt is iat. Default the issuer's clock.
	IssuedAt time.Time
	// NotBefore is nbf. Default IssuedAt, as Kubernetes sets it.
	NotBefore time.Time
	// Expiry is exp; if zero it is IssuedAt + TTL.
	Expiry time.Time
	// TTL is the lifetime when Expiry is zero. Default one hour; a
	// negative TTL makes a token that expired before it was issued.
	TTL time.Duration
	// Alg is RS256 (the default) or ES256; Token panics on anything else.
	Alg string

	// Kubernetes claims, under "kubernetes.io" as in a projected service
	// account token (Kubernetes 1.30 and later):
	//
	//	"kubernetes.io": {"namespace": ns,
	//	  "serviceaccount": {"name": sa, "uid": …}, "pod": {"name": …, "uid": …},
	//	  "node": {"name": …, "uid": …}}
	//
	// They are present when Subject is empty or any of these is set.
	// Namespace and ServiceAccount default to "default"; pod and node appear
	// only when named. A UID left empty is derived from the object's name, so
	// every token for the same pod carries the same pod UID; set PodUID to
	// stand for a restarted pod of the same name.
	Namespace, ServiceAccount, Pod, Node string
	ServiceAccountUID, PodUID, NodeUID   string

	// Claims are set last, over the standard ones; a nil value removes a
	// claim (e.g. {"exp": nil} for a token without expiry, or {"iss": x}
	// for a token naming another issuer).
	Claims map[string]any
}

// Forgery is a way Issuer.Forge makes a token that must be refused.
type Forgery int

const (
	// ForgeAlgNone: header {"alg":"none"} and an empty signature.
	ForgeAlgNone Forgery = iota + 1
	// ForgeHMACPublicKey: HS256, keyed with the PEM of the issuer's current
	// RSA public key (the classic algorithm-confusion attack), with that
	// key's kid.
	ForgeHMACPublicKey
	// ForgeForeignKey: signed with a fresh key of the spec's Alg that the
	// issuer never published, under the current key's kid: a bad signature.
	ForgeForeignKey
	// ForgeUnknownKID: signed with a fresh, unpublished key under a kid the
	// issuer never published.
	ForgeUnknownKID
	// ForgeTampered: a validly signed token whose payload was then changed
	// (its sub has "-tampered" appended).
	ForgeTampered
)

// IssuerStats counts HTTP fetches of an issuer's documents.
type IssuerStats struct {
	Discovery int `json:"discovery"`
	JWKS      int `json:"jwks"`
}

// Issuer is an OIDC issuer test double, in the image of a Kubernetes API
// server's service-account issuer: it signs tokens with an RS256 and an
// ES256 key and serves its discovery document (DiscoveryPath) and JWKS
// (JWKSPath) as an http.Handler. Keys rotate: Rotate makes new keys current
// while the old ones stay published until Retire. It is safe for concurrent
// use. Create it with NewIssuer or NewIssuerServer.
type Issuer struct {
	url  string
	path string // url's path, without a trailing slash
	now  func() time.Time

	mu      sync.Mutex
	rand    io.Reader
	keys    []*signingKey // published, oldest first
	current map[string]*signingKey
	stats   IssuerStats
}

type signingKey struct {
	kid  string
	alg  string
	priv crypto.Signer
}

func (k *signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: k.alg, Use: "sig"}
}

// NewIssuer returns an issuer whose iss is issuerURL, with one RS256 and one
// ES256 key. issuerURL must be an absolute http(s) URL without a query, and
// the issuer's handler must be reachable at it: standalone (NewIssuerServer)
// or mounted at its path (Emulator.StartIssuer serves it under /oidc).
func NewIssuer(issuerURL string, opts IssuerOptions) (*Issuer, error) {
	u, err := url.Parse(issuerURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("issuer URL %q: want an absolute http(s) URL without query or fragment", issuerURL)
	}
	i := &Issuer{
		url:     strings.TrimRight(issuerURL, "/"),
		path:    strings.TrimRight(u.EscapedPath(), "/"),
		now:     opts.Now,
		rand:    opts.Rand,
		current: map[string]*signingKey{},
	}
	if i.now == nil {
		i.now = time.Now
	}
	if i.rand == nil {
		i.rand = rand.Reader
	}
	if _, err := i.Rotate(); err != nil {
		return nil, err
	}
	return i, nil
}

// NewIssuerServer starts an httptest server that serves a new issuer at its
// root, so iss is the server's URL. The caller closes the server.
func NewIssuerServer(opts IssuerOptions) (*Issuer, *httptest.Server, error) {
	var h atomic.Pointer[Issuer]
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := h.Load(); i != nil {
			i.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	i, err := NewIssuer(ts.URL, opts)
	if err != nil {
		ts.Close()
		return nil, nil, err
	}
	h.Store(i)
	return i, ts, nil
}

// URL is the issuer identifier: the iss of its tokens.
func (i *Issuer) URL() string { return i.url }

// JWKSURL is where the issuer's key set is served.
func (i *Issuer) JWKSURL() string { return i.url + JWKSPath }

// Path is the URL path the issuer is served under ("" at a server's root).
func (i *Issuer) Path() string { return i.path }

// ServeHTTP serves GET <path>/.well-known/openid-configuration and
// GET <path>/openid/v1/jwks, counting each; anything else is 404.
func (i *Issuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body any
	switch r.URL.EscapedPath() {
	case i.path + DiscoveryPath:
		i.count(func(s *IssuerStats) { s.Discovery++ })
		body = i.discovery()
	case i.path + JWKSPath:
		i.count(func(s *IssuerStats) { s.JWKS++ })
		body = i.KeySet()
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	data, err := json.Marshal(body)
	if err != nil {
		http.Error(w, "cannot encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(data)
}

func (i *Issuer) count(f func(*IssuerStats)) {
	i.mu.Lock()
	defer i.mu.Unlock()
	f(&i.stats)
}

// discovery is the OpenID provider metadata, as a Kubernetes API server
// publishes it.
func (i *Issuer) discovery() map[string]any {
	return map[string]any{
		"issuer":                                i.url,
		"jwks_uri":                              i.JWKSURL(),
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{RS256, ES256},
	}
}

// Stats returns the fetch counters since NewIssuer or ResetStats.
func (i *Issuer) Stats() IssuerStats {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.stats
}

// ResetStats zeroes the fetch counters.
func (i *Issuer) ResetStats() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.stats = IssuerStats{}
}

// KeySet returns the published public keys, oldest first, each with kid,
// alg and use "sig".
func (i *Issuer) KeySet() jose.JSONWebKeySet {
	i.mu.Lock()
	defer i.mu.Unlock()
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(i.keys))}
	for _, k := range i.keys {
		set.Keys = append(set.Keys, k.public())
	}
	return set
}

// CurrentKeyID returns the kid that signs tokens of alg now ("" for an alg
// the issuer does not sign with).
func (i *Issuer) CurrentKeyID(alg string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	if k := i.current[alg]; k != nil {
		return k.kid
	}
	return ""
}

// Rotate makes a new RS256 and a new ES256 key current. The previous keys
// stay published, so their tokens still verify, until Retire; Rotate
// returns their kids (none on the first call, from NewIssuer).
func (i *Issuer) Rotate() ([]string, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ECDSA key: %w", err)
	}
	var old []string
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, k := range [...]*signingKey{{alg: RS256, priv: rk}, {alg: ES256, priv: ek}} {
		// The kid is the key's RFC 7638 thumbprint, as Kubernetes derives
		// it from the public key: unique, and stable for a key.
		jwk := jose.JSONWebKey{Key: k.priv.Public()}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("key thumbprint: %w", err)
		}
		k.kid = base64.RawURLEncoding.EncodeToString(tp)
		if prev := i.current[k.alg]; prev != nil {
			old = append(old, prev.kid)
		}
		i.current[k.alg] = k
		i.keys = append(i.keys, k)
	}
	return old, nil
}

// Retire unpublishes the key kid: tokens it signed no longer verify. The
// current keys cannot be retired.
func (i *Issuer) Retire(kid string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	for n, k := range i.keys {
		if k.kid != kid {
			continue
		}
		if i.current[k.alg] == k {
			return fmt.Errorf("key %q is current; Rotate first", kid)
		}
		i.keys = slices.Delete(i.keys, n, n+1)
		return nil
	}
	return fmt.Errorf("no published key %q", kid)
}

// Claims returns the claims Token would sign for spec (with a fresh jti),
// for tests that want to see or adjust them.
func (i *Issuer) Claims(spec TokenSpec) map[string]any {
	now := i.now()
	iat := spec.IssuedAt
	if iat.IsZero() {
		iat = now
	}
	nbf := spec.NotBefore
	if nbf.IsZero() {
		nbf = iat
	}
	exp := spec.Expiry
	if exp.IsZero() {
		ttl := spec.TTL
		if ttl == 0 {
			ttl = time.Hour
		}
		exp = iat.Add(ttl)
	}
	aud := spec.Audience
	if aud == nil {
		aud = []string{DefaultAudience}
	}
	c := map[string]any{
		"iss": i.url, "aud": aud, "iat": iat.Unix(), "nbf": nbf.Unix(), "exp": exp.Unix(),
		"jti": i.uuid(),
	}
	k8s := spec.Subject == "" || spec.Namespace != "" || spec.ServiceAccount != "" || spec.Pod != "" || spec.Node != ""
	sub := spec.Subject
	if k8s {
		ns, sa := cmp.Or(spec.Namespace, "default"), cmp.Or(spec.ServiceAccount, "default")
		if sub == "" {
			sub = "system:serviceaccount:" + ns + ":" + sa
		}
		ref := func(kind, name, uid string) map[string]string {
			return map[string]string{"name": name, "uid": cmp.Or(uid, nameUID(kind, ns, name))}
		}
		kc := map[string]any{"namespace": ns, "serviceaccount": ref("serviceaccount", sa, spec.ServiceAccountUID)}
		if spec.Pod != "" {
			kc["pod"] = ref("pod", spec.Pod, spec.PodUID)
		}
		if spec.Node != "" {
			kc["node"] = ref("node", spec.Node, spec.NodeUID)
		}
		c["kubernetes.io"] = kc
	}
	c["sub"] = sub
	for k, v := range spec.Claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// Token returns a token for spec signed with the current key of spec.Alg.
// It panics if spec.Alg is not RS256, ES256 or empty, or if a Claims value
// cannot be encoded as JSON: mistakes in the calling test.
func (i *Issuer) Token(spec TokenSpec) string {
	return i.sign(i.payload(spec), spec.Alg)
}

// Forge returns a token for spec, made in the way f says, that a verifier
// must refuse. It panics on an unknown Forgery.
func (i *Issuer) Forge(spec TokenSpec, f Forgery) string {
	alg := cmp.Or(spec.Alg, RS256)
	payload := i.payload(spec)
	enc := base64.RawURLEncoding.EncodeToString
	switch f {
	case ForgeAlgNone:
		return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
	case ForgeHMACPublicKey:
		i.mu.Lock()
		k := i.current[RS256]
		i.mu.Unlock()
		der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
		if err != nil {
			panic(err)
		}
		pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		// go-jose signs HS256 too; the point is the key, not the MAC.
		return signWith(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: pemKey, KeyID: k.kid}}, payload)
	case ForgeForeignKey, ForgeUnknownKID:
		kid := i.CurrentKeyID(alg)
		if f == ForgeUnknownKID {
			kid = "unpublished-" + enc(sha256Sum(payload)[:6])
		}
		return signWith(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jose.JSONWebKey{Key: freshKey(alg), KeyID: kid}}, payload)
	case ForgeTampered:
		tok := i.sign(payload, alg)
		var c map[string]any
		if err := json.Unmarshal(payload, &c); err != nil {
			panic(err)
		}
		c["sub"] = fmt.Sprint(c["sub"]) + "-tampered"
		parts := strings.Split(tok, ".")
		return parts[0] + "." + enc(mustJSON(c)) + "." + parts[2]
	}
	panic(fmt.Sprintf("cwapitest: unknown Forgery %d", f))
}

func (i *Issuer) payload(spec TokenSpec) []byte { return mustJSON(i.Claims(spec)) }

// sign signs payload with the current key of alg.
func (i *Issuer) sign(payload []byte, alg string) string {
	alg = cmp.Or(alg, RS256)
	i.mu.Lock()
	k := i.current[alg]
	i.mu.Unlock()
	if k == nil {
		panic(fmt.Sprintf("cwapitest: Issuer signs with RS256 or ES256, not %q", alg))
	}
	return signWith(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, payload)
}

// signWith signs payload into a compact JWS. Kubernetes sets no typ header,
// so neither does this.
func signWith(key jose.SigningKey, payload []byte) string {
	s, err := jose.NewSigner(key, nil)
	if err != nil {
		panic(fmt.Sprintf("cwapitest: signer: %v", err))
	}
	jws, err := s.Sign(payload)
	if err != nil {
		panic(fmt.Sprintf("cwapitest: sign: %v", err))
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		panic(fmt.Sprintf("cwapitest: serialize: %v", err))
	}
	return out
}

func freshKey(alg string) crypto.Signer {
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case RS256:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		panic(fmt.Sprintf("cwapitest: Issuer signs with RS256 or ES256, not %q", alg))
	}
	if err != nil {
		panic(err)
	}
	return k
}

// uuid returns a random version-4 UUID, as Kubernetes uses for jti.
func (i *Issuer) uuid() string {
	var b [16]byte
	i.mu.Lock()
	_, err := io.ReadFull(i.rand, b[:])
	i.mu.Unlock()
	if err != nil {
		panic(fmt.Sprintf("cwapitest: Issuer randomness: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

// nameUID is a UUID derived from an object's kind, namespace and name.
func nameUID(kind, ns, name string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + ns + "\x00" + name))
	var b [16]byte
	copy(b[:], sum[:])
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

func formatUUID(b [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("cwapitest: token claims: %v", err))
	}
	return b
}
