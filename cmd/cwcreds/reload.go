package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/config"
)

// The variables read before config.Load, to find and check the env file.
const (
	envFileVar       = "CWCREDS_ENV_FILE"
	allowInsecureVar = "CWCREDS_ALLOW_INSECURE_FILE_MODES"
)

// envOverlay is the configuration of a daemon started with CWCREDS_ENV_FILE:
// the process environment at start with the file's variables on top (the
// file wins, as systemd's EnvironmentFile= over Environment=). The file is
// read at start and again at every SIGHUP, and config.Load gets the
// combined environ: the process environment itself never changes, so a
// variable the file stops setting is simply gone (or back to the process's
// value) and a rejected reload leaves nothing to undo.
type envOverlay struct {
	path          string
	allowInsecure bool     // CWCREDS_ALLOW_INSECURE_FILE_MODES from the process environment
	environ       []string // the process environment at start
}

// newEnvOverlay returns the overlay for CWCREDS_ENV_FILE in environ, or nil
// when it is not set. Whether an insecure mode of the file itself is
// accepted comes from the process environment only: the file cannot grant
// itself permission.
func newEnvOverlay(environ []string) *envOverlay {
	path := lookupEnv(environ, envFileVar)
	if path == "" {
		return nil
	}
	return &envOverlay{path: path, allowInsecure: insecureModesAllowed(environ), environ: slices.Clone(environ)}
}

// insecureModesAllowed reports whether environ sets
// CWCREDS_ALLOW_INSECURE_FILE_MODES to true, spelled as config accepts it
// (any other value is off here, and a configuration error in config.Load).
func insecureModesAllowed(environ []string) bool {
	v := lookupEnv(environ, allowInsecureVar)
	return v == "true" || v == "1"
}

// load reads the file and loads the configuration from the process
// environment with the file's variables after it (a later entry wins).
func (o *envOverlay) load() (*config.Config, error) {
	vars, err := config.ReadEnvFile(o.path, o.allowInsecure)
	if err != nil {
		return nil, &usageError{fmt.Errorf("%s: %w", envFileVar, err)}
	}
	environ := slices.Grow(slices.Clip(o.environ), len(vars))
	for _, v := range vars {
		environ = append(environ, v.Name+"="+v.Value)
	}
	cfg, err := config.Load(environ)
	if err != nil {
		return nil, configError(err)
	}
	return cfg, nil
}

// lookupEnv returns name's value in environ ("NAME=value" entries; the
// last one wins, as in os.Environ).
func lookupEnv(environ []string, name string) string {
	val := ""
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			val = v
		}
	}
	return val
}

// loadServeConfig loads the serve command's configuration: from the process
// environment, with CWCREDS_ENV_FILE on top when it is set. reload is nil
// without an env file: there is nothing a SIGHUP could re-read.
func loadServeConfig(environ []string) (cfg *config.Config, reload func() (*config.Config, error), err error) {
	o := newEnvOverlay(environ)
	if o == nil {
		cfg, err := config.Load(environ)
		if err != nil {
			return nil, nil, configError(err)
		}
		return cfg, nil, nil
	}
	cfg, err = o.load()
	if err != nil {
		return nil, nil, err
	}
	return cfg, o.load, nil
}

// reload applies a configuration re-read on SIGHUP to the running daemon,
// all or nothing. Profiles whose key-deciding settings are unchanged keep
// their cached keys and refresh schedules; removed ones are dropped at
// once; new or changed ones start warming. A configuration that is invalid
// or changes a setting only a restart can apply is rejected: the daemon
// keeps running as it was, and the log says why.
//
// Around it, systemd hears RELOADING=1 (with MONOTONIC_USEC=) and then
// READY=1, and the outcome is written to reload.json in the runtime
// directory for `cwcreds reload`, which waits for it (see reloadOutcome).
func (d *node) reload(load func() (*config.Config, error)) {
	started, err := monotonicUsec()
	if err != nil {
		d.log.Warn().Err(err).Msg("reload start time unknown; `cwcreds reload` will not see this reload's outcome")
	}
	out := reloadOutcome{PID: os.Getpid(), StartedUsec: started}
	d.log.Info().Msg("SIGHUP: reloading the configuration")
	if d.notify != nil {
		d.notify.reloading(started)
	}
	defer func() {
		if d.notify != nil {
			d.notify.ready(d.readiness())
		}
		d.recordReload(out)
	}()
	d.checkTokenFiles(d.cfg) // token files are re-read at every mint; say now if one broke
	if d.srv != nil {
		d.srv.RecheckAccess() // group changes apply at once, whatever the outcome
	}
	if load == nil {
		out.Outcome, out.Detail = reloadNotReloadable, envFileVar+" is not set, so there is no file to re-read; token files are re-read at every mint anyway"
		d.log.Info().Msg("configuration not reloaded: " + envFileVar + " is not set, and the process environment cannot change; token files are re-read at every mint anyway")
		return
	}
	cfg, err := load()
	var res broker.UpdateResult
	if err == nil {
		res, err = d.apply(cfg)
	}
	if err != nil {
		// A config error lists every problem; none of them holds a secret.
		d.log.Error().Bool("audit", true).Str("event", "reload_rejected").Err(err).
			Msg("configuration reload rejected; the running configuration is unchanged")
		out.Outcome, out.Problems = reloadRejected, problemLines(err)
		return
	}
	out.Outcome, out.Detail = reloadApplied, fmt.Sprintf("%d profiles: kept %s, added %s, replaced %s, removed %s",
		len(cfg.Profiles), listOrNone(res.Kept), listOrNone(res.Added), listOrNone(res.Replaced), listOrNone(res.Removed))
}

// problemLines renders a rejected reload's error as one problem a line:
// each config.Problem as "VAR: msg", or else the error's own lines. No
// error a reload returns holds a secret: config problems quote no value,
// and the others name variables, profiles and paths.
func problemLines(err error) []string {
	var ce *config.Error
	if errors.As(err, &ce) {
		lines := make([]string, len(ce.Problems))
		for i, p := range ce.Problems {
			lines[i] = p.String()
		}
		return lines
	}
	var lines []string
	for l := range strings.SplitSeq(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, " ")
}

// errRestartOnly says a reload changed settings that only a restart applies.
var errRestartOnly = errors.New("a restart is needed to apply")

// apply switches the daemon to cfg, or changes nothing and says why.
func (d *node) apply(cfg *config.Config) (broker.UpdateResult, error) {
	if vars := config.RestartOnly(d.cfg, cfg); len(vars) > 0 {
		return broker.UpdateResult{}, fmt.Errorf("%s changed: %w (systemctl restart cwcreds), or undo the change and reload again",
			strings.Join(vars, ", "), errRestartOnly)
	}
	profiles, tokens, err := d.profiles(cfg)
	if err != nil {
		return broker.UpdateResult{}, err
	}
	res, err := d.cache.Update(profiles)
	if err != nil {
		return broker.UpdateResult{}, err
	}
	d.srv.SetProfiles(tokens, accessOf(cfg, d.log))
	if d.metrics != nil {
		for _, name := range res.Removed {
			d.metrics.DeleteProfile(name)
		}
	}
	d.cfg = cfg
	d.checkTokenFiles(cfg)
	d.log.Info().Bool("audit", true).Str("event", "reloaded").
		Strs("kept", res.Kept).Strs("added", res.Added).Strs("replaced", res.Replaced).Strs("removed", res.Removed).
		Msg("configuration reloaded")
	return res, nil
}
