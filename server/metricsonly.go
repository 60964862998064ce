package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// MetricsHandler returns the handler of the metrics-only listener
// (CWCREDS_METRICS_LISTEN_ADDR): GET /metrics (Options.Metrics), GET
// /healthz and GET /readyz, each answered by the same handler as on the
// Server itself. Every other path is 404 NotFound and every other method
// on those paths 405 MethodNotAllowed (HEAD included, as on the Server),
// with the usual JSON error body. So no credential, IMDS, status or revoke
// route exists there, whatever the request.
//
// Requests are logged and panics recovered as on the Server, but the
// guard's checks do not apply (see guard), and on purpose: they keep a
// browser or a proxy from relaying a credential, and nothing here is one.
// /metrics and /readyz hold no secret (profile names, counts, the
// broker's reasons, which are safe to show), and every route is a GET
// that changes nothing, so a DNS-rebinding page or a proxy gains nothing a
// direct scraper does not. The Host guard would also break legitimate
// scrapers: Prometheus sends whatever name or address it was configured
// with, and may scrape through a proxy (proxy_url) that adds Via or
// X-Forwarded-For; an operator may open /metrics in a browser.
//
// It is safe for concurrent use, like the Server, and may be served on
// its own listener alongside the Server's.
func (s *Server) MetricsHandler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.logRequests, s.recoverPanics)
	// The Allow header of a 405 is what the Server's own router routes for
	// the path (allowedMethods): GET for each of these three, as here.
	r.NotFound(s.notFound)
	r.MethodNotAllowed(s.methodNotAllowed)
	if s.metrics != nil {
		r.Method(http.MethodGet, "/metrics", s.metrics)
	}
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	return r
}

// MetricsConnLimits bound the metrics-only listener's connections (see
// LimitConnections), apart from the credential listeners'
// (DefaultConnLimits), so a flood there never costs a credential client
// its connection. A scraper holds one or two keep-alive connections, so a
// few per peer are plenty; the total keeps what anyone who can reach the
// address (on a node IP, every pod of the cluster) can hold open to a few
// megabytes. A flooder only ever displaces quiet connections, its own
// first, so an idle scraper reconnects and a busy one is never cut.
var MetricsConnLimits = ConnLimits{Total: 128, PerPeer: 8}
