package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/s3check"
	"github.com/cwcreds/cwcreds/config"
	"github.com/cwcreds/cwcreds/metrics"
	"github.com/cwcreds/cwcreds/peer"
	"github.com/cwcreds/cwcreds/server"
)

// shutdownTimeout bounds how long SIGTERM waits for in-flight requests.
// A cold request waits at most broker.MintTimeout for upstream.
// clientTokenMode lets the daemon's group read client token files: client
// users join that group (see systemd/cwcreds.service).
const clientTokenMode = 0o640

const shutdownTimeout = broker.MintTimeout + 5*time.Second

// serve runs the daemon for cfg until ctx ends, logging to logOut. When
// ready is non-nil it is called with the bound address once the listener
// accepts connections. It never reloads; see serveWith.
func serve(ctx context.Context, cfg *config.Config, logOut io.Writer, ready func(net.Addr, map[string]string)) error {
	return serveWith(ctx, cfg, logOut, serveHooks{ready: ready})
}

// serveHooks connects serveWith to its caller.
type serveHooks struct {
	// ready, when set, is called with the bound address and the client
	// tokens once the listener accepts connections.
	ready func(net.Addr, map[string]string)
	// notify, when set, receives the sd_notify messages instead of
	// $NOTIFY_SOCKET (tests).
	notify notifySender
	// reloads delivers SIGHUP: each one re-reads the configuration with
	// load (nil without CWCREDS_ENV_FILE: token files are checked only).
	reloads <-chan os.Signal
	load    func() (*config.Config, error)
	// inherited, when set, are the sockets systemd passed (tests);
	// nil means activation.Files (LISTEN_FDS).
	inherited []*os.File
	// metricsReady, when set, is called with the metrics-only listener's
	// bound address (CWCREDS_METRICS_LISTEN_ADDR) just before ready.
	metricsReady func(net.Addr)
}

// node is the running daemon's state that a reload changes. Only
// serveWith's goroutine uses it, so it needs no lock.
type node struct {
	log    zerolog.Logger
	cfg    *config.Config
	client *cwapi.Client
	cache  *broker.Cache
	srv    *server.Server
	// metrics deletes a removed profile's series on reload.
	metrics *metrics.Metrics
	addr    net.Addr
	// notify tells systemd about readiness and reloads; nil until serving.
	notify *notifier
	// identifyPeers: the HTTP server must attach each connection's peer.
	identifyPeers bool
}

// serveWith runs the daemon for cfg until ctx ends, applying each reload
// h delivers.
func serveWith(ctx context.Context, cfg *config.Config, logOut io.Writer, h serveHooks) error {
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat, logOut)
	if err != nil {
		return &usageError{err}
	}
	d, tokens, err := newNode(cfg, log, nodeOptions{reloadable: h.load != nil})
	if err != nil {
		return err
	}
	inherited := h.inherited
	if inherited == nil {
		inherited = systemdFiles()
	}
	lns, err := listen(cfg.ListenAddr, inherited)
	if err != nil {
		return err
	}
	// The metrics-only listener: a plain bind, never socket-activated.
	var metricsLn net.Listener
	if cfg.MetricsListenAddr != "" {
		if metricsLn, err = listenMetrics(cfg.MetricsListenAddr); err != nil {
			closeAll(lns)
			return err
		}
	}
	ln, err := mergeListeners(lns)
	if err != nil {
		closeAll(lns)
		if metricsLn != nil {
			metricsLn.Close()
		}
		return err
	}
	d.addr = ln.Addr()
	activated := lns[0].activated // all or none: listen maps every address
	httpSrv := server.NewHTTPServer(cfg.ListenAddr, d.srv, log)
	if d.identifyPeers {
		httpSrv.ConnContext = peer.ConnContext
	}

	// The cache outlives the listener so requests in flight at shutdown
	// still get their keys; it stops once the server has drained.
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	cacheDone := make(chan struct{})
	go func() { d.cache.Run(cacheCtx); close(cacheDone) }()
	defer func() { stopCache(); <-cacheDone }()
	// The audit trail's summaries likewise: it stops after the drain, so
	// its final flush counts every request served.
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	auditDone := make(chan struct{})
	go func() { d.srv.RunAudit(auditCtx); close(auditDone) }()
	defer func() { stopAudit(); <-auditDone }()

	serveErr := make(chan error, 1)
	// Bounded per local user and in all (issue 11, finding 4); after
	// ConnContext is set, which it wraps.
	limited := server.LimitConnections(httpSrv, ln, server.DefaultConnLimits, log)
	go func() { serveErr <- httpSrv.Serve(limited) }()
	// The metrics-only server: its own http.Server (same timeouts) and its
	// own, smaller connection budget, so nothing that reaches it can take
	// connections from credential clients.
	var metricsSrv *http.Server
	metricsErr := make(chan error, 1)
	if metricsLn != nil {
		metricsSrv = server.NewHTTPServer(cfg.MetricsListenAddr, d.srv.MetricsHandler(), log)
		mlimited := server.LimitConnections(metricsSrv, metricsLn, server.MetricsConnLimits, log)
		go func() { metricsErr <- metricsSrv.Serve(mlimited) }()
	}
	started := log.Info().Str("version", buildVersion()).Str("listen", listenAddrs(lns))
	if metricsLn != nil {
		started = started.Str("metrics_listen", metricsLn.Addr().String())
	}
	started.Bool("socket_activated", activated).Str("api_url", cfg.APIURL).Int("profiles", len(cfg.Profiles)).
		Bool("reloadable", h.load != nil).Msg("cwcreds serving")
	if h.metricsReady != nil && metricsLn != nil {
		h.metricsReady(metricsLn.Addr())
	}
	if h.ready != nil {
		h.ready(ln.Addr(), tokens)
	}
	// systemd Type=notify: READY=1 now, STATUS= kept true to the
	// profiles' readiness and the watchdog while ctx lives, STOPPING=1
	// when it ends.
	d.notify = newNotifier(log, h.notify)
	defer d.notify.start(ctx, d.readiness, watchdogInterval(log), statusPollInterval)()

	for running := true; running; {
		select {
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		case err := <-metricsErr:
			return fmt.Errorf("serve metrics (CWCREDS_METRICS_LISTEN_ADDR): %w", err)
		case <-ctx.Done():
			running = false
		case <-h.reloads:
			d.reload(h.load)
		}
	}
	// Shutdown closes our descriptor only: a socket systemd passed stays
	// open in systemd, which queues new connections for the next daemon.
	log.Info().Bool("socket_kept_by_systemd", activated).Msg("shutting down: draining requests")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// The metrics server drains alongside, within the same deadline; both
	// are done before the deferred audit flush and cache stop.
	metricsShut := make(chan error, 1)
	if metricsSrv != nil {
		go func() { metricsShut <- metricsSrv.Shutdown(sctx) }()
	} else {
		metricsShut <- nil
		metricsErr <- http.ErrServerClosed
	}
	shutErr := httpSrv.Shutdown(sctx)
	if err := <-metricsShut; err != nil {
		metricsSrv.Close()
		shutErr = errors.Join(shutErr, fmt.Errorf("metrics listener: %w", err))
	}
	if shutErr != nil {
		return fmt.Errorf("shutdown: %w", shutErr)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	if err := <-metricsErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics (CWCREDS_METRICS_LISTEN_ADDR): %w", err)
	}
	log.Info().Msg("stopped")
	return nil
}

// nodeOptions are what newNode takes besides the configuration.
type nodeOptions struct {
	// reloadable: a reload may come, which may restrict a profile, so
	// peers are identifiable from the start.
	reloadable bool
	// httpClient sends upstream calls. Default cwapi.NewHTTPClient();
	// tests replace its transport.
	httpClient cwapi.HTTPDoer
	// rand is the cache's jitter source. Default math/rand/v2.
	rand func() float64
	// s3Client sends the S3 key checks (CWCREDS_S3_ENDPOINT). Default: the
	// broker's upstream HTTP client.
	s3Client s3check.HTTPDoer
}

// newNode builds the daemon for cfg: the upstream client, one minter and
// client token per profile, the cache, the metrics and the HTTP handler.
// It neither listens nor starts the cache (d.cache.Run), and returns the
// client tokens by profile.
func newNode(cfg *config.Config, log zerolog.Logger, o nodeOptions) (*node, map[string]string, error) {
	m, metricsHandler, err := newMetrics()
	if err != nil {
		return nil, nil, err
	}
	d := &node{log: log, cfg: cfg, metrics: m}
	if d.client, err = newClient(cfg, m, o.httpClient); err != nil {
		return nil, nil, err
	}
	profiles, tokens, err := d.profiles(cfg)
	if err != nil {
		return nil, nil, err
	}
	// Not fatal: a projected token may appear after start-up. But say so
	// now rather than only at the first mint.
	d.checkTokenFiles(cfg)
	verifier, err := newVerifier(cfg, log, o.s3Client)
	if err != nil {
		return nil, nil, err
	}
	d.cache, err = broker.NewCache(profiles, func(co *broker.CacheOptions) {
		co.Logger = log
		co.Observer = m
		co.KeyWarmup = cfg.KeyWarmup
		co.MaxWorkloadIdentities = cfg.MaxWorkloadIdentities
		co.UpstreamQPS = cfg.UpstreamQPS
		co.MaxPendingTokensPerPeer = cfg.MaxPendingWorkloadTokens
		co.Rand = o.rand
		if verifier != nil {
			co.Verifier = verifier
		}
	})
	if err != nil {
		return nil, nil, err
	}
	if err := m.WatchProfiles(d.cache, nil); err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	adminToken, err := newAdminToken(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	access := accessOf(cfg, log)
	opts := server.Options{ClientTokens: tokens, AllowNonLoopbackHosts: cfg.AllowNonLoopback, IMDSProfile: cfg.IMDSProfile(),
		Metrics: metricsHandler, Requests: m, Revoker: d.cache, AdminToken: adminToken, Access: access}
	// Peers are identified only for restricted profiles, once per
	// connection and only when first needed; without any restricted profile,
	// and no reload that could add one, nothing is wired at all. The audit
	// line's uid is wired with them: peer.Identity never looks one up, so it
	// costs nothing until a reload adds the first restricted profile.
	if d.identifyPeers = anyRestricted(cfg) || o.reloadable; d.identifyPeers {
		opts.Peers = peer.Requests{}
		opts.PeerIdentity = peer.Identity
	}
	d.srv = server.New(log, d.cache, opts)
	return d, tokens, nil
}

// readiness is the STATUS= line for systemd: how many profiles have a key
// to serve, and why the first one that has not. Safe to call from any
// goroutine: it reads only the cache and the bound address.
func (d *node) readiness() string {
	return readinessStatus(d.addr.String(), d.cache.Status())
}

// accessOf returns who may use each profile that is not open to every
// local client and to no pod: the profiles with ALLOWED_UIDS or
// ALLOWED_GIDS, and those served to pods (workload-oidc, ALLOW_PODS); nil
// when there are none.
func accessOf(cfg *config.Config, log zerolog.Logger) map[string]server.Access {
	var access map[string]server.Access
	for _, p := range cfg.Profiles {
		if !p.Restricted() && !p.AllowPods {
			continue
		}
		if access == nil {
			access = make(map[string]server.Access)
		}
		access[p.Name] = server.Access{UIDs: p.AllowedUIDs, GIDs: p.AllowedGIDs, Pods: p.AllowPods}
		if p.Restricted() {
			log.Info().Str("profile", p.Name).Uints32("allowed_uids", p.AllowedUIDs).Uints32("allowed_gids", p.AllowedGIDs).
				Msg("profile restricted to some local users")
		} else {
			log.Info().Str("profile", p.Name).Str("source", p.Source).Msg("profile served to pods (clients beyond loopback)")
		}
	}
	return access
}

// anyRestricted reports whether some profile of cfg is restricted to some
// local users, so peers must be identified.
func anyRestricted(cfg *config.Config) bool {
	return slices.ContainsFunc(cfg.Profiles, config.Profile.Restricted)
}

// newClient builds the upstream client every profile mints through;
// httpClient nil means the broker's default.
func newClient(cfg *config.Config, m *metrics.Metrics, httpClient cwapi.HTTPDoer) (*cwapi.Client, error) {
	client, err := cwapi.NewClient(cfg.APIURL, func(o *cwapi.ClientOptions) {
		o.UserAgent = "cwcreds/" + buildVersion()
		o.Observer = m
		o.HTTPClient = httpClient
	})
	if err != nil {
		return nil, &usageError{fmt.Errorf("CWCREDS_API_URL: %w", err)}
	}
	return client, nil
}

// profiles builds one minter per profile of cfg, and loads (or creates)
// each profile's client token.
func (d *node) profiles(cfg *config.Config) ([]broker.CacheProfile, map[string]string, error) {
	profiles := make([]broker.CacheProfile, 0, len(cfg.Profiles))
	tokens := make(map[string]string, len(cfg.Profiles))
	for _, p := range cfg.Profiles {
		if p.Workload() {
			spec, err := workloadSpec(cfg, p, d.client)
			if err != nil {
				return nil, nil, &usageError{err}
			}
			tokens[p.Name] = "" // no client token: each caller presents its own OIDC token
			profiles = append(profiles, broker.CacheProfile{Name: p.Name, Source: cwapi.SourceWorkloadOIDC,
				Workload: spec, Fingerprint: p.Fingerprint()})
			continue
		}
		bp := brokerProfile(cfg, p)
		minter, err := d.client.Minter(bp)
		if err != nil {
			return nil, nil, &usageError{err}
		}
		tok, created, err := server.LoadClientToken(p.ClientTokenFile, rand.Reader, clientTokenMode)
		if err != nil {
			return nil, nil, fmt.Errorf("profile %q client token (set CWCREDS_RUNTIME_DIR or CWCREDS_PROFILE_%s_CLIENT_TOKEN_FILE to a writable place): %w", p.Name, p.EnvName, err)
		}
		if created {
			d.log.Info().Str("profile", p.Name).Str("path", p.ClientTokenFile).Msg("created client token file")
		}
		tokens[p.Name] = tok
		profiles = append(profiles, broker.CacheProfile{Name: p.Name, Source: cwapi.Source(p.Source), Minter: minter,
			Revoker: d.client.Revoker(bp), Fingerprint: p.Fingerprint(),
			Lister: d.client.Lister(bp), KeyLifetime: bp.Duration})
	}
	return profiles, tokens, nil
}

func brokerProfile(cfg *config.Config, p config.Profile) cwapi.MintSpec {
	return cwapi.MintSpec{
		Name:           p.Name,
		Source:         cwapi.Source(p.Source),
		TokenFile:      p.TokenFile,
		OrgID:          p.OrgID,
		ConfigID:       p.ConfigID,
		Duration:       p.Duration,
		Attributes:     cwapi.AuditAttributes(cfg.NodeName, p.Name),
		TokenFileRules: tokenFileRules(cfg),
	}
}

// tokenFileRules are the loose token file modes cfg accepts.
func tokenFileRules(cfg *config.Config) cwapi.TokenFileRules {
	return cwapi.TokenFileRules{AllowInsecureMode: cfg.AllowInsecureFileModes, CredentialsDir: cfg.CredentialsDir}
}

// checkTokenFiles logs every profile whose upstream token file cannot be
// used now (missing, empty, unsafe mode): its mints will fail until fixed.
func (d *node) checkTokenFiles(cfg *config.Config) {
	for _, p := range cfg.Profiles {
		if p.Workload() {
			continue // no token file: callers present theirs
		}
		if _, err := cwapi.ReadTokenFileWith(p.TokenFile, tokenFileRules(cfg)); err != nil {
			d.log.Warn().Str("profile", p.Name).Err(err).Msg("upstream token file not usable; mints will fail until it is")
		}
	}
}

// newLogger builds the one logger the daemon passes down.
func newLogger(level, format string, out io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || lvl == zerolog.NoLevel {
		return zerolog.Logger{}, fmt.Errorf("CWCREDS_LOG_LEVEL: unknown level %q", level)
	}
	if format == "console" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}
