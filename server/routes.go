package server

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/cwcreds/cwcreds/broker"
)

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
	r.With(s.loopbackOnly).Get("/v1/profiles", s.getProfiles)
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.With(s.loopbackOnly).Post("/v1/profiles/{profile}/revoke", s.revokeKey)
	if s.metrics != nil {
		r.Method(http.MethodGet, "/metrics", s.metrics)
	}
	if s.imds != nil {
		s.imdsRoutes(r)
	}
	return r
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
