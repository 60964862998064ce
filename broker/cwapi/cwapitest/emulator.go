package cwapitest

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-jose/go-jose/v4"
)

// Endpoint names, used as Stats keys and in Fault.Endpoint. The first five
// are the minting endpoints, to which latency and faults apply.
const (
	EndpointAccessKey       = "access-key"        // POST /v1/cwobject/access-key
	EndpointAPIToken        = "api-token"         // GET /v1/cwobject/temporary-credentials/api-token
	EndpointOIDC            = "oidc"              // POST /v1/cwobject/temporary-credentials/oidc
	EndpointContainer       = "oidc-container"    // GET /v1/cwobject/temporary-credentials/oidc/{orgId}
	EndpointSAML            = "saml"              // POST /v1/cwobject/temporary-credentials/saml
	EndpointList            = "list-access-keys"  // GET /v1/cwobject/access-key
	EndpointGet             = "get-access-key"    // GET /v1/cwobject/access-key/{accessKeyId}
	EndpointRevokeKey       = "revoke-access-key" // POST /v1/cwobject/revoke-access-key/access-key
	EndpointRevokePrincipal = "revoke-principal"  // POST /v1/cwobject/revoke-access-key/principal
	EndpointUpdateStatus    = "access-key-status" // PUT /v1/cwobject/access-key-status
)

// Access key statuses, as reported in AccessKeyInfo and Key.Status.
const (
	StatusActive    = "ACTIVE"
	StatusExpired   = "EXPIRED"
	StatusSuspended = "FULL_SUSPENDED"
	StatusDeleted   = "DELETED"
)

// Defaults for Options.
const (
	DefaultFederatedDuration = 900 * time.Second
	DefaultMaxDuration       = 12 * time.Hour
	// FixedDuration is the lifetime of keys from the api-token and
	// container-credentials GETs, which take no duration.
	FixedDuration = 15 * time.Minute
)

const (
	pathAccessKey       = "/v1/cwobject/access-key"
	pathAPIToken        = "/v1/cwobject/temporary-credentials/api-token"
	pathOIDC            = "/v1/cwobject/temporary-credentials/oidc"
	pathSAML            = "/v1/cwobject/temporary-credentials/saml"
	pathRevokeKey       = "/v1/cwobject/revoke-access-key/access-key"
	pathRevokePrincipal = "/v1/cwobject/revoke-access-key/principal"
	pathUpdateStatus    = "/v1/cwobject/access-key-status"
)

// IsMintingEndpoint reports whether name is one of the five minting
// endpoint names.
func IsMintingEndpoint(name string) bool {
	switch name {
	case EndpointAccessKey, EndpointAPIToken, EndpointOIDC, EndpointContainer, EndpointSAML:
		return true
	}
	return false
}

// Options configures an Emulator. The zero value is ready to use.
type Options struct {
	// Now reads the clock for key expiry and status and for JWT exp and
	// nbf checks. Default time.Now.
	Now func() time.Time
	// Rand supplies randomness for key ids and secrets. It is only read
	// under the emulator's lock, so it need not be safe for concurrent use.
	// Default crypto/rand.Reader.
	Rand io.Reader
	// DefaultFederatedDuration is the lifetime of an OIDC or SAML POST key
	// requested with durationSeconds 0 or omitted. Default 900 s; it is
	// capped at MaxDuration.
	DefaultFederatedDuration time.Duration
	// MaxDuration is the longest durationSeconds accepted; longer requests
	// fail with INVALID_ARGUMENT. Default 12 h.
	MaxDuration time.Duration
	// OnMint, if set, is called with every successfully minted key
	// (secret included) before the reply is written, e.g. to register the
	// key with a fake S3 server.
	OnMint func(Key)
	// OnRevoke, if set, is called with the id of every key revoked by
	// either revoke endpoint, after the revocation and before the reply.
	OnRevoke func(accessKeyID string)
	// HTTPClient fetches the discovery documents and key sets of issuers
	// registered without an in-process Issuer or fixed Keys. Default: a
	// client with a 10-second timeout.
	HTTPClient *http.Client
}

// Identity is what an API access token stands for.
type Identity struct {
	// Principal is the key's principal name, e.g. "coreweave/<uid>".
	Principal string
	// OrgID is the organization whose keys the identity mints and manages.
	OrgID string
	// Denied identities lack every cwobject permission: all TokenAuth
	// endpoints answer 403 PERMISSION_DENIED "permission denied".
	Denied bool
}

// OIDCIssuer is a workload-identity-federation OIDC configuration: which
// organization trusts the issuer, for which audience, and where the keys
// that verify its tokens' signatures come from. The first set of Issuer,
// Keys and JWKSURL is used; with none set the keys are found as CoreWeave
// finds them, by OIDC discovery at <iss>/.well-known/openid-configuration.
type OIDCIssuer struct {
	// OrgID is the organization the issuer is configured in.
	OrgID string
	// Audience is the Client ID tokens must carry in aud; empty accepts
	// any audience.
	Audience string
	// Issuer, if set, is an in-process issuer whose published keys are read
	// directly, without HTTP: its fetch counters count only other clients,
	// and Rotate and Retire take effect at once.
	Issuer *Issuer
	// Keys, if set, is a fixed key set.
	Keys *jose.JSONWebKeySet
	// JWKSURL, if set, is fetched for the key set. A fetched set (from here
	// or by discovery) is cached for five minutes of Options.Now and
	// fetched again, at most one fetch at a time, when a token names a kid
	// the cached set lacks.
	JWKSURL string
}

// SAMLConfig is a workload-identity-federation SAML configuration.
type SAMLConfig struct {
	// OrgID is the organization the configuration belongs to.
	OrgID string
}

// Fault makes minting requests fail. Faults queue in FIFO order; a request
// takes the first queued fault whose Endpoint matches.
type Fault struct {
	// Endpoint is the minting endpoint name it applies to; "" means all.
	Endpoint string
	// Status is the HTTP status of the reply. If it is not 400–599 it is
	// derived from Code.
	Status int
	// Code is the numeric gRPC code in the reply; if 0 it is derived from
	// Status, and if both are 0 the fault is 503 UNAVAILABLE.
	Code int
	// Message is the reply's message. Default "injected fault".
	Message string
	// RetryAfter, if positive, is sent as a Retry-After header in whole
	// seconds, rounded up.
	RetryAfter time.Duration
	// Count is how many requests the fault applies to; <= 0 means every
	// matching request until ClearFaults.
	Count int
	// Malformed faults reply 200 with a body that is not a valid key:
	// Body if set, else truncated JSON. Status and Code are ignored.
	Malformed bool
	// Body is the raw reply body of a Malformed fault, e.g. a key without
	// its secret.
	Body string
	// Delay, if positive, holds the faulted reply back that long after the
	// latency: a slow failure, such as a gateway timing out. A request whose
	// context ends meanwhile gets 499 CANCELLED instead.
	Delay time.Duration
}

// Stats counts the emulator's API traffic since New or ResetStats.
type Stats struct {
	// Requests counts routed API requests per endpoint name.
	Requests map[string]int `json:"requests"`
	// Mints counts successful mints per minting endpoint name.
	Mints map[string]int `json:"mints"`
	// InFlight is the number of minting requests being served now,
	// including time spent in added latency.
	InFlight int `json:"inFlight"`
	// MaxInFlight is the high-water mark of InFlight.
	MaxInFlight int `json:"maxInFlight"`
	// Orphaned counts, per minting endpoint, keys that were minted (and
	// are counted in Mints) but whose reply never reached the client: its
	// request ended while the reply waited out the reply latency. Each is a
	// live key nobody holds, the cost of a mint the client gave up on.
	Orphaned map[string]int `json:"orphaned"`
}

// Key is a minted access key, secret included. It is a copy: changing it
// does not change the emulator.
type Key struct {
	// AccessKeyID is "CW" and 14 upper-case alphanumerics.
	AccessKeyID string
	// SecretKey is "cwo" and 40 lower-case alphanumerics.
	SecretKey string
	// Principal is the key's principal name, e.g. "role/<iss>:<sub>".
	Principal string
	// OrgID is the organization that owns the key.
	OrgID string
	// Attributes are the attributes given when minting; never nil in keys
	// the emulator returns.
	Attributes map[string]string
	// Expiry is the zero time for a permanent key.
	Expiry time.Time
	// Created is when the key was minted, per Options.Now.
	Created time.Time
	// Endpoint is the name of the endpoint that minted the key.
	Endpoint string
	// Status is the key's status when the copy was made: one of
	// StatusActive, StatusExpired, StatusSuspended and StatusDeleted.
	Status string
}

// Emulator emulates the CoreWeave credential API. It implements
// http.Handler and is safe for concurrent use. Create it with New.
type Emulator struct {
	now              func() time.Time
	defaultFederated time.Duration
	maxDuration      time.Duration
	onMint           func(Key)
	onRevoke         func(string)
	httpClient       *http.Client
	handler          http.Handler

	mu          sync.Mutex
	rand        io.Reader
	tokens      map[[sha256.Size]byte]Identity // by SHA-256 of the token
	issuers     map[string]*issuerReg
	served      []*Issuer // served by ServeHTTP at their paths
	own         *Issuer   // started by StartIssuer; driven by the controls
	samlConfigs map[string]SAMLConfig
	latency     time.Duration
	replyDelay  time.Duration
	faults      []Fault
	requests    map[string]int
	mints       map[string]int
	orphaned    map[string]int
	inFlight    int
	maxInFlight int
	keys        map[string]*record
	order       []*record // mint order
}

// record is a stored key.
type record struct {
	id, secret, principal, orgID, endpoint string
	attrs                                  map[string]string
	expiry, created                        time.Time
	revoked, suspended                     bool
}

func (r *record) status(now time.Time) string {
	switch {
	case r.revoked:
		return StatusDeleted
	case !r.expiry.IsZero() && !now.Before(r.expiry):
		return StatusExpired
	case r.suspended:
		return StatusSuspended
	}
	return StatusActive
}

func (r *record) key(now time.Time) Key {
	return Key{
		AccessKeyID: r.id, SecretKey: r.secret, Principal: r.principal, OrgID: r.orgID,
		Attributes: maps.Clone(r.attrs), Expiry: r.expiry, Created: r.created,
		Endpoint: r.endpoint, Status: r.status(now),
	}
}

// New returns an emulator with no identities registered.
func New(opts Options) *Emulator {
	e := &Emulator{
		now:              opts.Now,
		defaultFederated: opts.DefaultFederatedDuration,
		maxDuration:      opts.MaxDuration,
		onMint:           opts.OnMint,
		onRevoke:         opts.OnRevoke,
		rand:             opts.Rand,
		tokens:           map[[sha256.Size]byte]Identity{},
		httpClient:       opts.HTTPClient,
		issuers:          map[string]*issuerReg{},
		samlConfigs:      map[string]SAMLConfig{},
		requests:         map[string]int{},
		mints:            map[string]int{},
		orphaned:         map[string]int{},
		keys:             map[string]*record{},
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.rand == nil {
		e.rand = rand.Reader
	}
	if e.httpClient == nil {
		e.httpClient = &http.Client{Timeout: 10 * time.Second}
	}
	if e.maxDuration <= 0 {
		e.maxDuration = DefaultMaxDuration
	}
	if e.defaultFederated <= 0 {
		e.defaultFederated = DefaultFederatedDuration
	}
	e.defaultFederated = min(e.defaultFederated, e.maxDuration)
	e.handler = e.routes()
	return e
}

// ServeHTTP serves the emulated API, the /_emulator/ controls, and the
// documents of the issuers given to ServeIssuer or StartIssuer.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if iss := e.servedIssuer(r.URL.EscapedPath()); iss != nil {
		iss.ServeHTTP(w, r)
		return
	}
	e.handler.ServeHTTP(w, r)
}

func (e *Emulator) servedIssuer(path string) *Issuer {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, iss := range e.served {
		if path == iss.path+DiscoveryPath || path == iss.path+JWKSPath {
			return iss
		}
	}
	return nil
}

// IssuerPath is where StartIssuer serves the emulator's own issuer: its iss
// is the emulator's base URL followed by IssuerPath.
const IssuerPath = "/oidc"

// StartIssuer creates the emulator's own OIDC issuer at baseURL+IssuerPath
// (baseURL being where this emulator is served, e.g. an httptest server's
// URL), with the emulator's clock; serves its discovery document and JWKS;
// and trusts it per cfg, whose Issuer field it sets. The /_emulator/oidc-*
// controls drive this issuer. It can be started once.
func (e *Emulator) StartIssuer(baseURL string, cfg OIDCIssuer) (*Issuer, error) {
	iss, err := NewIssuer(strings.TrimRight(baseURL, "/")+IssuerPath, IssuerOptions{Now: e.now})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if e.own != nil {
		e.mu.Unlock()
		return nil, errors.New("the emulator's issuer is already started")
	}
	e.own = iss
	e.mu.Unlock()
	if err := e.ServeIssuer(iss); err != nil {
		return nil, err
	}
	cfg.Issuer = iss
	e.AddOIDCIssuer(iss.URL(), cfg)
	return iss, nil
}

// Issuer returns the issuer started by StartIssuer, or nil.
func (e *Emulator) Issuer() *Issuer {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.own
}

// ServeIssuer serves iss's discovery document and JWKS from this emulator,
// at iss's URL path, which must be neither empty nor under /v1/ or
// /_emulator/. It does not make the emulator trust iss: see AddOIDCIssuer.
func (e *Emulator) ServeIssuer(iss *Issuer) error {
	p := iss.Path()
	if p == "" || strings.HasPrefix(p+"/", "/v1/") || strings.HasPrefix(p+"/", controlPrefix+"/") {
		return fmt.Errorf("cannot serve an issuer at path %q", p)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.served = append(e.served, iss)
	return nil
}

func (e *Emulator) routes() http.Handler {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, errorf(CodeNotFound, "no such endpoint"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, code: CodeUnimplemented, msg: "method not allowed"})
	})

	r.Post(pathAccessKey, e.minting(EndpointAccessKey, e.createAccessKey))
	r.Get(pathAPIToken, e.minting(EndpointAPIToken, e.createFromAPIToken))
	r.Post(pathOIDC, e.minting(EndpointOIDC, e.createFromOIDC))
	r.Get(pathOIDC+"/{orgId}", e.minting(EndpointContainer, e.createFromContainer))
	r.Post(pathSAML, e.minting(EndpointSAML, e.createFromSAML))

	r.Get(pathAccessKey, e.managing(EndpointList, e.listKeys))
	r.Get(pathAccessKey+"/{accessKeyId}", e.managing(EndpointGet, e.getKey))
	r.Post(pathRevokeKey, e.managing(EndpointRevokeKey, e.revokeKey))
	r.Post(pathRevokePrincipal, e.managing(EndpointRevokePrincipal, e.revokePrincipal))
	r.Put(pathUpdateStatus, e.managing(EndpointUpdateStatus, e.updateStatus))

	e.controlRoutes(r)
	return r
}

// AddAPIToken registers (or replaces) an API access token. An empty token
// is ignored: it never authenticates.
func (e *Emulator) AddAPIToken(token string, id Identity) {
	if token == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tokens[sha256.Sum256([]byte(token))] = id
}

// AddOIDCIssuer registers (or replaces) a trusted OIDC issuer. iss must
// match tokens' iss claim exactly. Replacing drops the issuer's cached keys.
func (e *Emulator) AddOIDCIssuer(iss string, cfg OIDCIssuer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.issuers[iss] = &issuerReg{cfg: cfg, cache: &keyCache{}}
}

// AddSAMLConfig registers (or replaces) a SAML configuration by its id.
func (e *Emulator) AddSAMLConfig(configID string, cfg SAMLConfig) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.samlConfigs[configID] = cfg
}

// SetLatency sets the delay added to every minting request from now on;
// 0 or less removes it. A waiting request ends early, with 499 CANCELLED,
// when its context ends.
func (e *Emulator) SetLatency(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.latency = max(d, 0)
}

// Latency returns the delay set by SetLatency.
func (e *Emulator) Latency() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.latency
}

// SetReplyLatency sets the delay added, from now on, between minting a key
// and writing the reply; 0 or less removes it. Unlike SetLatency, the key
// already exists while the reply waits: a request whose context ends then
// gets 499 CANCELLED, and its key stays minted and active, counted in
// Stats.Orphaned. This is how a real upstream behaves when a client times
// out on a slow reply, and why mints are not idempotent.
func (e *Emulator) SetReplyLatency(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.replyDelay = max(d, 0)
}

// ReplyLatency returns the delay set by SetReplyLatency.
func (e *Emulator) ReplyLatency() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.replyDelay
}

// InjectFault queues f after any faults already queued. Defaults are filled
// in as documented on Fault. A fault naming an endpoint that is not a
// minting endpoint never matches.
func (e *Emulator) InjectFault(f Fault) {
	if f.Code == 0 {
		f.Code = grpcCode(f.Status)
		if f.Status == 0 {
			f.Code = CodeUnavailable
		}
	}
	if f.Status < 400 || f.Status > 599 {
		f.Status = httpStatus(f.Code)
	}
	if f.Message == "" {
		f.Message = "injected fault"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = append(e.faults, f)
}

// Faults returns the queued faults in order, with their remaining counts.
func (e *Emulator) Faults() []Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.faults)
}

// ClearFaults drops every queued fault.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = nil
}

// takeFault dequeues (or, for a fault with a count, uses up one
// application of) the first fault matching endpoint.
func (e *Emulator) takeFault(endpoint string) (Fault, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.faults {
		f := e.faults[i]
		if f.Endpoint != "" && f.Endpoint != endpoint {
			continue
		}
		if f.Count > 0 {
			if f.Count == 1 {
				e.faults = slices.Delete(e.faults, i, i+1)
			} else {
				e.faults[i].Count--
			}
		}
		return f, true
	}
	return Fault{}, false
}

// Stats returns a snapshot of the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{
		Requests:    maps.Clone(e.requests),
		Mints:       maps.Clone(e.mints),
		Orphaned:    maps.Clone(e.orphaned),
		InFlight:    e.inFlight,
		MaxInFlight: e.maxInFlight,
	}
}

// ResetStats zeroes the request and mint counters, and the fetch counters
// of the issuers it serves, and sets MaxInFlight to the current InFlight.
// Requests in flight stay counted in InFlight.
func (e *Emulator) ResetStats() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.requests)
	clear(e.mints)
	clear(e.orphaned)
	e.maxInFlight = e.inFlight
	for _, iss := range e.served {
		iss.ResetStats()
	}
}

// Key returns a copy of the key with the given id, secret included, in any
// status, for tests that verify S3 signatures.
func (e *Emulator) Key(accessKeyID string) (Key, bool) {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.keys[accessKeyID]
	if !ok {
		return Key{}, false
	}
	return r.key(now), true
}

// Keys returns copies of every key ever minted, in mint order.
func (e *Emulator) Keys() []Key {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Key, len(e.order))
	for i, r := range e.order {
		out[i] = r.key(now)
	}
	return out
}
