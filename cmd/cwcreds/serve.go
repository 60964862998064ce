package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
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
// accepts connections.
func serve(ctx context.Context, cfg *config.Config, logOut io.Writer, ready func(net.Addr, map[string]string)) error {
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat, logOut)
	if err != nil {
		return &usageError{err}
	}
	m, metricsHandler, err := newMetrics()
	if err != nil {
		return err
	}
	cache, tokens, err := newCache(cfg, log, m)
	if err != nil {
		return err
	}
	adminToken, err := newAdminToken(cfg, log)
	if err != nil {
		return err
	}
	opts := server.Options{ClientTokens: tokens, AllowNonLoopbackHosts: cfg.AllowNonLoopback, IMDSProfile: cfg.IMDSProfile(),
		Metrics: metricsHandler, Requests: m, Revoker: cache, AdminToken: adminToken}
	restricted := peerAccess(cfg, &opts, log)
	srv := server.New(log, cache, opts)

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (CWCREDS_LISTEN_ADDR): %w", cfg.ListenAddr, err)
	}
	httpSrv := server.NewHTTPServer(cfg.ListenAddr, srv, log)
	if restricted {
		httpSrv.ConnContext = peer.ConnContext // a peer is looked up once per connection, when first needed
	}

	// The cache outlives the listener so requests in flight at shutdown
	// still get their keys; it stops once the server has drained.
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	cacheDone := make(chan struct{})
	go func() { cache.Run(cacheCtx); close(cacheDone) }()
	defer func() { stopCache(); <-cacheDone }()

	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	log.Info().Str("version", buildVersion()).Str("listen", ln.Addr().String()).
		Str("api_url", cfg.APIURL).Int("profiles", len(cfg.Profiles)).Msg("cwcreds serving")
	if ready != nil {
		ready(ln.Addr(), tokens)
	}
	// systemd Type=notify: READY=1 now, the watchdog while ctx lives, STOPPING=1 when it ends.
	defer notifySystemd(ctx, log, fmt.Sprintf("serving %d profiles on %s", len(cfg.Profiles), ln.Addr()))()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info().Msg("shutting down: draining requests")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info().Msg("stopped")
	return nil
}

// peerAccess sets opts up for the profiles with ALLOWED_UIDS or
// ALLOWED_GIDS and reports whether there are any. Without them nothing is
// wired: no request pays for peer identification.
func peerAccess(cfg *config.Config, opts *server.Options, log zerolog.Logger) bool {
	for _, p := range cfg.Profiles {
		if !p.Restricted() {
			continue
		}
		if opts.Access == nil {
			opts.Access = make(map[string]server.Access)
		}
		opts.Access[p.Name] = server.Access{UIDs: p.AllowedUIDs, GIDs: p.AllowedGIDs}
		log.Info().Str("profile", p.Name).Uints32("allowed_uids", p.AllowedUIDs).Uints32("allowed_gids", p.AllowedGIDs).
			Msg("profile restricted to some local users")
	}
	if opts.Access == nil {
		return false
	}
	opts.Peers = peer.Requests{}
	opts.PeerIdentity = peer.Identity
	return true
}

// newCache builds the upstream client, one minter per profile and the
// cache, and loads (or creates) each profile's client token.
func newCache(cfg *config.Config, log zerolog.Logger, m *metrics.Metrics) (*broker.Cache, map[string]string, error) {
	client, err := broker.NewClient(cfg.APIURL, func(o *broker.ClientOptions) {
		o.UserAgent = "cwcreds/" + buildVersion()
		o.Observer = m
	})
	if err != nil {
		return nil, nil, &usageError{fmt.Errorf("CWCREDS_API_URL: %w", err)}
	}
	profiles := make([]broker.CacheProfile, 0, len(cfg.Profiles))
	tokens := make(map[string]string, len(cfg.Profiles))
	for _, p := range cfg.Profiles {
		bp := broker.Profile{
			Name:       p.Name,
			Source:     broker.Source(p.Source),
			TokenFile:  p.TokenFile,
			OrgID:      p.OrgID,
			ConfigID:   p.ConfigID,
			Duration:   p.Duration,
			Attributes: broker.AuditAttributes(cfg.NodeName, p.Name),
		}
		minter, err := client.Minter(bp)
		if err != nil {
			return nil, nil, &usageError{err}
		}
		// Not fatal: a projected token may appear after start-up. But say so
		// now rather than only at the first mint.
		if _, err := broker.ReadTokenFile(p.TokenFile); err != nil {
			log.Warn().Str("profile", p.Name).Err(err).Msg("upstream token file not usable yet; mints will fail until it is")
		}
		tok, created, err := server.LoadClientToken(p.ClientTokenFile, rand.Reader, clientTokenMode)
		if err != nil {
			return nil, nil, fmt.Errorf("profile %q client token (set CWCREDS_RUNTIME_DIR or CWCREDS_PROFILE_%s_CLIENT_TOKEN_FILE to a writable place): %w", p.Name, p.EnvName, err)
		}
		if created {
			log.Info().Str("profile", p.Name).Str("path", p.ClientTokenFile).Msg("created client token file")
		}
		tokens[p.Name] = tok
		profiles = append(profiles, broker.CacheProfile{Name: p.Name, Source: broker.Source(p.Source), Minter: minter,
			Revoker: client.Revoker(bp)})
	}
	cache, err := broker.NewCache(profiles, func(o *broker.CacheOptions) {
		o.Logger = log
		o.Observer = m
	})
	if err != nil {
		return nil, nil, err
	}
	if err := m.WatchProfiles(cache, nil); err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	return cache, tokens, nil
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
