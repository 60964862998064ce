package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/cwcreds/cwcreds/broker"
)

// credentialsPrefix is the credential route's path up to the profile name.
const credentialsPrefix = "/v1/credentials/"

// middlewares is the chain every request goes through, outermost first:
// the chi router and ServeHTTP's fast credential path both use it.
func (s *Server) middlewares() []func(http.Handler) http.Handler {
	return []func(http.Handler) http.Handler{s.logRequests, s.recoverPanics, s.guard}
}

// routes builds the handler: every route and middleware is here. A static
// route under credentialsPrefix would be shadowed by ServeHTTP's fast path.
func (s *Server) routes() *chi.Mux {
	r := chi.NewRouter()
	r.Use(s.middlewares()...)
	r.NotFound(s.notFound)
	r.MethodNotAllowed(s.methodNotAllowed)

	r.Get(credentialsPrefix+"{profile}", s.getCredentials)
	r.Get("/v1/profiles", s.getProfiles)
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Post("/v1/profiles/{profile}/revoke", s.revokeKey)
	if s.metrics != nil {
		r.Method(http.MethodGet, "/metrics", s.metrics)
	}
	if s.imds != nil {
		s.imdsRoutes(r)
	}
	return r
}

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
		// The requested name is not logged as a profile: it is request
		// input, not a configured name.
		s.unknown.Count(OutcomeUnknownProfile)
		s.audit(r, "", OutcomeUnknownProfile, "").Msg("credential request refused: unknown profile")
		s.writeError(w, r, fmt.Errorf("%w: %q", broker.ErrUnknownProfile, name))
		return
	}
	// A restricted profile refuses other users before looking at the token,
	// and even with the right one.
	if err := s.checkAccess(r, p); err != nil {
		p.requests.Count(OutcomeForbidden)
		s.audit(r, name, OutcomeForbidden, "").Msg("credential request refused: user not allowed")
		s.sendError(w, r, err.status, err.code, err.msg)
		return
	}
	// Exactly one Authorization header; indexing the map directly skips
	// Header.Get's key canonicalisation on the hot path.
	auth := r.Header["Authorization"]
	if len(auth) != 1 || !tokenMatches(auth[0], p.token) {
		// Never log the presented value, only how many there were.
		p.requests.Count(OutcomeUnauthorized)
		s.audit(r, name, OutcomeUnauthorized, "").Int("authorization_headers", len(auth)).
			Msg("credential request refused: wrong or missing client token")
		s.writeError(w, r, errUnauthorized)
		return
	}
	creds, err := s.keys.Get(r.Context(), name)
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
		_, code, _ := errorStatus(err)
		o := outcomeOf(code)
		p.requests.Count(o)
		s.audit(r, name, o, "").Msg("credential request not served")
		s.writeError(w, r, err)
		return
	}
	p.requests.Count(OutcomeOK)
	s.audit(r, name, OutcomeOK, creds.AccessKeyID).Msg("credential served")
	writeBody(w, http.StatusOK, body)
}

// profilesBody is the /v1/profiles response.
type profilesBody struct {
	Profiles []broker.Status `json:"profiles"`
}

// getProfiles reports every profile's status; it holds no secret.
func (s *Server) getProfiles(w http.ResponseWriter, r *http.Request) {
	st := s.keys.Status()
	if st == nil {
		st = []broker.Status{} // "profiles":[] rather than null
	}
	s.writeJSON(w, http.StatusOK, profilesBody{Profiles: st})
}

// healthz is the liveness probe: the process serves HTTP. It never calls the
// broker, so an upstream outage does not restart the daemon.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeBody(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, errNotFound)
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, errMethodNotAllowed)
}

// allowedMethods lists, for an Allow header, the methods routed for r's
// path. chi does not pass them to a custom 405 handler, so ask the router,
// with the path chi routed on.
func (s *Server) allowedMethods(r *http.Request) string {
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	var allowed []string
	for _, m := range []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions,
	} {
		if s.mux.Match(chi.NewRouteContext(), m, path) {
			allowed = append(allowed, m)
		}
	}
	return strings.Join(allowed, ", ")
}
