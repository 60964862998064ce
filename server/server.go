package server

import (
	"context"
	"log"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// KeyGetter is what the server needs from the broker; *broker.Cache
// satisfies it. Implementations must be safe for concurrent use.
type KeyGetter interface {
	// Get returns the profile's current key. Its Expires is never zero
	// (the broker gives a key upstream calls permanent a finite life, see
	// broker.PermanentKeyLifetime). The returned pointer is immutable and
	// shared: the server never modifies it, and caches the
	// rendered response for as long as Get keeps returning the same pointer.
	// When no key can be served the error is errors.Is broker.ErrNoValidKey,
	// and its text is safe to show to clients.
	Get(ctx context.Context, profile string) (*cwapi.Credentials, error)
	// Status reports every profile. It must hold no secret.
	Status() []broker.Status
}

// Options configures a Server.
type Options struct {
	// ClientTokens maps each served profile to the token its clients must
	// send as the Authorization header. A profile absent here is unknown
	// (404). A profile whose token is empty is refused to every client.
	// It and Access are the initial profile set; Server.SetProfiles
	// replaces both.
	ClientTokens map[string]string
	// AllowNonLoopbackHosts also accepts any IP literal as the request's
	// Host (for a listener on a non-loopback address). DNS names other than
	// localhost are refused even then.
	AllowNonLoopbackHosts bool
	// IMDSProfile, when set, is the profile served as the EC2 instance
	// role under /latest/ (IMDSv2 emulation, see imds.go). It must be in
	// ClientTokens. It is fixed for the Server's life: while the profile
	// set lacks it, the role answers 404.
	IMDSProfile string

	// Metrics, when set, is served at GET /metrics (behind the same guards
	// as every route), e.g. a promhttp handler.
	Metrics http.Handler
	// Requests counts credential requests by profile and outcome. Default:
	// none.
	Requests RequestMetrics
	// PeerIdentity, when set, adds the peer's uid and pid to audit lines.
	PeerIdentity PeerIdentity
	// Access restricts profiles to some local users (see access.go): a
	// profile listed with a non-zero Access is refused (403) to any other
	// peer, and to every peer when Peers is nil. Other profiles never
	// consult Peers.
	Access map[string]Access
	// Peers identifies the local user behind a request, for Access.
	Peers Peers
	// Revoker and AdminToken enable POST /v1/profiles/{profile}/revoke,
	// accepted only with AdminToken as the Authorization header. Without
	// both the route refuses every request.
	Revoker    KeyRevoker
	AdminToken string
}

// Server is the HTTP handler for the credential endpoints. Build it with New;
// it is safe for concurrent use.
type Server struct {
	log  zerolog.Logger
	keys KeyGetter
	// profiles is the served profile set. It is copy-on-write: a map, once
	// stored, is never modified, so requests read it with one atomic load
	// and no lock (see SetProfiles).
	profiles atomic.Pointer[map[string]*profile]
	// reload serialises SetProfiles calls (requests never take it).
	reload sync.Mutex
	anyIP  bool
	now    func() time.Time
	mux    *chi.Mux
	// fastCreds is the credential route outside chi (see ServeHTTP); nil
	// sends every request through chi (tests compare both).
	fastCreds http.Handler
	imds      *imds // nil unless Options.IMDSProfile is set

	audit        *auditor
	requests     RequestMetrics // resolves the counter of every profile SetProfiles adds
	unknown      RequestCounter // requests for unconfigured profiles
	peerIdentity PeerIdentity
	peers        Peers
	groups       groupCache // peers' groups, trusted for GroupsTTL (access.go)
	metrics      http.Handler
	revoker      KeyRevoker
	adminToken   string
	// lines bounds the log lines requests cause one by one (loglimit.go).
	lines *lineLimiter
}

// profile is one served profile: its client token and the last rendered
// response. name, token, requests and access never change; a reload that
// changes the token or access builds a new profile.
type profile struct {
	name     string
	token    string
	rendered atomic.Pointer[renderedKey]
	requests RequestCounter
	access   Access // zero: any peer
	// entry is the broker's profile as configured when this one was (see
	// broker.Entry), so a request reads token and key from one reload;
	// zero when keys is not a *broker.Cache (tests), then key asks by name.
	entry broker.Entry
	// onRender, when set, is called at every render (tests count them).
	onRender func()
	// bodies holds the rendered keys of a workload profile (entry.Workload).
	bodies *workloadBodies
}

// New returns a Server that serves keys from keys to the profiles in
// opts.ClientTokens, logging to log.
func New(log zerolog.Logger, keys KeyGetter, opts Options) *Server {
	s := &Server{
		log:   log,
		keys:  keys,
		anyIP: opts.AllowNonLoopbackHosts,
		now:   time.Now,
		lines: newLineLimiter(),
	}
	if opts.Requests == nil {
		opts.Requests = nopRequests{}
	}
	s.audit = newAuditor(log, func() time.Time { return s.now() })
	s.requests = opts.Requests
	s.unknown = opts.Requests.Requests("")
	s.peerIdentity = opts.PeerIdentity
	s.peers = opts.Peers
	s.metrics = opts.Metrics
	s.revoker, s.adminToken = opts.Revoker, opts.AdminToken
	s.profiles.Store(new(map[string]*profile{}))
	s.SetProfiles(opts.ClientTokens, opts.Access)
	if opts.IMDSProfile != "" {
		s.imds = newIMDS(opts.IMDSProfile, func() time.Time { return s.now() })
		log.Warn().Str("profile", opts.IMDSProfile).
			Msg("IMDSv2 emulation on: any local process can get this profile's keys from /latest/ without its client token")
	}
	s.mux = s.routes()
	s.fastCreds = chi.Chain(s.middlewares()...).HandlerFunc(s.getCredentialsFast)
	return s
}

// SetProfiles atomically replaces the served profile set with the profiles
// in tokens (name -> client token, as Options.ClientTokens), restricted as
// in access (as Options.Access). Once it returns, every new request sees
// the new set: a removed profile is unknown (404), an added one is served,
// and a changed token or Access applies. A profile whose token and Access
// are unchanged keeps its rendered body and its request counter; a changed
// one starts afresh, with the counter Options.Requests gives for its name.
// Requests already past the profile lookup finish with the set they read.
//
// The IMDS role (Options.IMDSProfile) is fixed at construction: if the new
// set lacks it, IMDS credential requests fail with 404 until a later call
// brings it back. SetProfiles keeps no reference to tokens, access or
// their slices: the caller may modify them afterwards. With a
// *broker.Cache, call it right after Cache.Update: each profile pins the
// cache's entry then (broker.Entry).
func (s *Server) SetProfiles(tokens map[string]string, access map[string]Access) {
	s.reload.Lock()
	defer s.reload.Unlock()
	old := *s.profiles.Load()
	next := make(map[string]*profile, len(tokens))
	for name, tok := range tokens {
		a := access[name]
		var entry broker.Entry
		if c, ok := s.keys.(*broker.Cache); ok {
			entry = c.Lookup(name)
		}
		if p := old[name]; p != nil && p.token == tok && p.access.equal(a) && p.entry == entry {
			next[name] = p
			continue
		}
		np := &profile{name: name, token: tok, requests: s.requests.Requests(name), access: a.clone(), entry: entry}
		if entry.Workload() {
			np.bodies = newWorkloadBodies()
		}
		next[name] = np
	}
	s.profiles.Store(&next)
	s.groups.forget() // a reload re-checks every peer's groups at once
}

// key returns p's key from the broker entry it pinned, or by name.
func (s *Server) key(ctx context.Context, p *profile) (*cwapi.Credentials, error) {
	if p.entry != (broker.Entry{}) {
		return p.entry.Get(ctx)
	}
	return s.keys.Get(ctx, p.name)
}

// profile returns the served profile called name, or nil.
func (s *Server) profile(name string) *profile {
	return (*s.profiles.Load())[name]
}

// ServeHTTP implements http.Handler.
//
// GET /v1/credentials/<name>, the hot path, skips chi: chi costs four
// allocations a request (a request copy, a context value, the path-value
// map). Such a request goes through the same middleware (see middlewares)
// around the same handler (serveCredentials) as its chi route, so the
// answer is identical; TestFastPathMatchesChi checks it. Only requests chi
// would route to that handler, with the same name, take it: method exactly
// GET, an unescaped path (chi routes on RawPath when set), a non-empty name
// without '/', and no chi routing context already on the request (a Server
// mounted in a chi router leaves every request to chi). Everything else,
// HEAD and trailing slashes included, goes to chi.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.fastCreds != nil && r.Method == http.MethodGet && r.URL.RawPath == "" {
		if _, ok := credentialsName(r.URL.Path); ok && r.Context().Value(chi.RouteCtxKey) == nil {
			s.fastCreds.ServeHTTP(w, r)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// HTTP server time bounds, chosen so that the cache-hit path sets as few
// socket deadlines as net/http allows (each one re-arms a runtime timer,
// which a profile put at ~7 % of the daemon's CPU at full load, when all
// four net/http timeouts were set). Per keep-alive request net/http does:
//
//   - IdleTimeout: a read deadline while waiting for the next request
//     (one timer arm). Kept: idle keep-alive connections hold an fd and
//     memory, SDKs fetch keys minutes apart and reconnect when the server
//     closed one, and it bounds how long the connection limiter
//     (LimitConnections) counts a connection nobody uses.
//   - ReadHeaderTimeout: a read deadline once the next request's first
//     bytes arrive (one timer modify), cleared when the headers are read
//     (one timer stop). Kept: it is the whole defence against a client
//     that never finishes its headers (Slowloris).
//   - ReadTimeout: would replace that clear with a new deadline for the
//     whole request, cleared again for the handler's background read (one
//     more timer operation), for nothing on this daemon's requests, which
//     have no body: not set. A request that has a body (admin revoke) gets
//     bodyReadTimeout from boundBodyReads instead, paid only by it.
//   - WriteTimeout: would arm a write deadline per request and stop it
//     after the response (two timer operations plus a clock read), and it
//     counts the handler's wait too, so it had to exceed broker.MintTimeout.
//     Not set: LimitConnections' connections bound every write to
//     writeTimeout themselves, re-arming their one write deadline only
//     when less than half of it is left (once per writeTimeout/2 of a
//     connection's life, not once per request; see limitedConn.Write). A
//     response here is under 1 KiB and lands in the socket buffer at
//     once, so only a client that stops reading (pipelining requests
//     without reading the answers until the buffers fill) ever meets the
//     bound, and loses its connection.
//
// So a hit costs three timer operations instead of six, the bare net/http
// server's zero-deadline calls aside. The daemon serves NewHTTPServer on
// LimitConnections' listener (cmd/cwcreds serve); the tests in
// slowclient_test.go prove each bound against a client that stalls there.
const (
	readHeaderTimeout = 5 * time.Second
	bodyReadTimeout   = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 30 * time.Second
	maxHeaderBytes    = 16 << 10
)

// httpTimeouts are NewHTTPServer's bounds (tests shorten them).
type httpTimeouts struct {
	readHeader, body, idle time.Duration
}

func defaultHTTPTimeouts() httpTimeouts {
	return httpTimeouts{readHeader: readHeaderTimeout, body: bodyReadTimeout, idle: idleTimeout}
}

// NewHTTPServer returns an http.Server for h on addr with the header size
// bounded, time bounds on reading headers and request bodies and on idle
// connections (writes are bounded by LimitConnections' connections; see
// the constants above), and net/http's own error log routed to log at warn
// level.
//
// It also disables net/http's built-in answer to "OPTIONS *", so that every
// request, whatever its form, passes through h's guards.
func NewHTTPServer(addr string, h http.Handler, log zerolog.Logger) *http.Server {
	return newHTTPServer(addr, h, log, defaultHTTPTimeouts())
}

func newHTTPServer(addr string, h http.Handler, log zerolog.Logger, t httpTimeouts) *http.Server {
	return &http.Server{
		Addr:                         addr,
		Handler:                      boundBodyReads(h, t.body),
		ReadHeaderTimeout:            t.readHeader,
		IdleTimeout:                  t.idle,
		MaxHeaderBytes:               maxHeaderBytes,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     newStdLogger(log),
	}
}

// boundBodyReads sets a read deadline d from now on requests that have a
// body, so a client sending one slowly cannot hold a handler; requests
// without a body (every credential request) pass untouched, setting no
// deadline. d <= 0 sets none.
func boundBodyReads(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		h.ServeHTTP(w, r)
	})
}

// newStdLogger adapts log to the *log.Logger net/http writes its own errors
// (TLS handshakes, malformed requests, superfluous WriteHeader) to.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(stdLogWriter{l.With().Str("component", "http").Logger()}, "", 0)
}

type stdLogWriter struct{ log zerolog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	w.log.Warn().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
