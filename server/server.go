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
}

// profile is one served profile: its client token and the last rendered
// response.
type profile struct {
	name     string
	token    string
	rendered atomic.Pointer[renderedKey]
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
	for name, tok := range opts.ClientTokens {
		s.profiles[name] = &profile{name: name, token: tok}
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
