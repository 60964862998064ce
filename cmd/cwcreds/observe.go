package main

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/config"
	"github.com/cwcreds/cwcreds/metrics"
)

// newMetrics builds the daemon's own Prometheus registry (never the
// default one): Go runtime and process collectors plus the cwcreds_*
// metrics. It returns the metrics to wire into the broker and server, and
// the /metrics handler.
func newMetrics() (*metrics.Metrics, http.Handler, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, nil, err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, nil, err
	}
	m, err := metrics.New(reg, buildVersion())
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	return m, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), nil
}

// adminTokenName is the admin token's file in the runtime directory. Client
// token files are <profile>.token, so no profile's default can be this.
const adminTokenName = "admin-token"

// adminTokenPath is where the daemon writes its admin token.
func adminTokenPath(runtimeDir string) string {
	return filepath.Join(runtimeDir, adminTokenName)
}

// newAdminToken writes a fresh admin token for the revoke endpoint at every
// start: 32 random bytes, hex, mode 0600, so only the daemon's user (and
// root) can revoke keys, even when client users may read the runtime
// directory. Restarting the daemon rotates it.
//
// It first checks the runtime directory (see checkRuntimeDir), then
// renames a new file over the old one in that checked directory, so there
// is no moment at which the name is free for someone else to claim, and a
// symlink left there is replaced, never written through.
func newAdminToken(cfg *config.Config, log zerolog.Logger) (string, error) {
	path := adminTokenPath(cfg.RuntimeDir)
	for _, p := range cfg.Profiles {
		if p.ClientTokenFile == path {
			return "", &usageError{fmt.Errorf("CWCREDS_PROFILE_%s_CLIENT_TOKEN_FILE is %s, the daemon's admin token file; choose another path", p.EnvName, path)}
		}
	}
	dir, err := checkRuntimeDir(cfg.RuntimeDir)
	if err != nil {
		return "", err
	}
	defer dir.Close()
	tok, err := dir.ReplaceToken(adminTokenName, rand.Reader, 0o600)
	if err != nil {
		return "", fmt.Errorf("admin token (set CWCREDS_RUNTIME_DIR to a writable place): %w", err)
	}
	log.Debug().Str("path", path).Msg("wrote admin token file")
	return tok, nil
}
