package server

import (
	"context"
	"log"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
)

// KeyGetter is what the server needs from the broker; *broker.Cache
// satisfies it. Implementations must be safe for concurrent use.
type KeyGetter interface {
	// Get returns the profile's current key. The returned pointer is
	// immutable and shared: the server never modifies it, and caches the
	// rendered response for as long as Get keeps returning the same pointer.
	// When no key can be served the error is errors.Is broker.ErrNoValidKey,
	// and its text is safe to show to clients.
	Get(ctx context.Context, profile string) (*broker.Credentials, error)
	// Status reports every profile. It must hold no secret.
	Status() []broker.Status
}

// Options configures a Server.
type Options struct {
	// ClientTokens maps each served profile to the token its clients must
	// send as the Authorization header. A profile absent here is unknown
	// (404). A profile whose token is empty is refused to every client.
	ClientTokens map[string]string
	// AllowNonLoopbackHosts also accepts any IP literal as the request's
	// Host (for a listener on a non-loopback address). DNS names other than
	// localhost are refused even then.
	AllowNonLoopbackHosts bool
	// IMDSProfile, when set, is the profile served as the EC2 instance
	// role under /latest/ (IMDSv2 emulation, see imds.go). It must be in
	// ClientTokens.
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
	log      zerolog.Logger
	keys     KeyGetter
	profiles map[string]*profile // fixed at construction: read without a lock
	anyIP    bool
	now      func() time.Time
	mux      *chi.Mux
	imds     *imds // nil unless Options.IMDSProfile is set

	auditLog     zerolog.Logger
	unknown      RequestCounter // requests for unconfigured profiles
	peerIdentity PeerIdentity
	peers        Peers
	metrics      http.Handler
	revoker      KeyRevoker
	adminToken   string
}

// profile is one served profile: its client token and the last rendered
// response.
type profile struct {
	name     string
	token    string
	rendered atomic.Pointer[renderedKey]
	requests RequestCounter
	access   Access // zero: any peer
}

// New returns a Server that serves keys from keys to the profiles in
// opts.ClientTokens, logging to log.
func New(log zerolog.Logger, keys KeyGetter, opts Options) *Server {
	s := &Server{
		log:      log,
		keys:     keys,
		profiles: make(map[string]*profile, len(opts.ClientTokens)),
		anyIP:    opts.AllowNonLoopbackHosts,
		now:      time.Now,
	}
	if opts.Requests == nil {
		opts.Requests = nopRequests{}
	}
	s.auditLog = newAuditLogger(log)
	s.unknown = opts.Requests.Requests("")
	s.peerIdentity = opts.PeerIdentity
	s.peers = opts.Peers
	s.metrics = opts.Metrics
	s.revoker, s.adminToken = opts.Revoker, opts.AdminToken
	for name, tok := range opts.ClientTokens {
		s.profiles[name] = &profile{name: name, token: tok, requests: opts.Requests.Requests(name), access: opts.Access[name]}
	}
	if opts.IMDSProfile != "" {
		s.imds = newIMDS(opts.IMDSProfile, func() time.Time { return s.now() })
		log.Warn().Str("profile", opts.IMDSProfile).
			Msg("IMDSv2 emulation on: any local process can get this profile's keys from /latest/ without its client token")
	}
	s.mux = s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// HTTP server limits. WriteTimeout must exceed the longest wait for a cold
// key (broker.MintTimeout), so a client waiting on a mint still gets an
// answer rather than a closed connection.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 16 << 10
)

// NewHTTPServer returns an http.Server for h on addr with every timeout and
// the header size bounded, and net/http's own error log routed to log at
// warn level.
//
// It also disables net/http's built-in answer to "OPTIONS *", so that every
// request, whatever its form, passes through h's guards.
func NewHTTPServer(addr string, h http.Handler, log zerolog.Logger) *http.Server {
	return &http.Server{
		Addr:                         addr,
		Handler:                      h,
		ReadHeaderTimeout:            readHeaderTimeout,
		ReadTimeout:                  readTimeout,
		WriteTimeout:                 writeTimeout,
		IdleTimeout:                  idleTimeout,
		MaxHeaderBytes:               maxHeaderBytes,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     newStdLogger(log),
	}
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
