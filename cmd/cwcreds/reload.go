package main

import (
	"errors"
	"fmt"
	"os"
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
// the process environment with the file's variables on top (the file wins,
// as systemd's EnvironmentFile= over Environment=). The file is read at
// start and again at every SIGHUP.
//
// envconfig reads the process environment itself, so the file's variables
// are set there (os.Setenv) rather than handed to config.Load; a variable
// the file stops setting gets back the value the process started with, so
// a profile removed from the file really disappears. Only the goroutine
// that handles reloads calls its methods.
type envOverlay struct {
	path          string
	allowInsecure bool // CWCREDS_ALLOW_INSECURE_FILE_MODES from the process environment
	orig          map[string]origVar
	applied       []config.EnvVar // what the file set last time
}

type origVar struct {
	value string
	set   bool
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
	return &envOverlay{path: path, allowInsecure: insecureModesAllowed(environ), orig: make(map[string]origVar)}
}

// insecureModesAllowed reports whether environ sets
// CWCREDS_ALLOW_INSECURE_FILE_MODES to true, spelled as config accepts it
// (any other value is off here, and a configuration error in config.Load).
func insecureModesAllowed(environ []string) bool {
	v := lookupEnv(environ, allowInsecureVar)
	return v == "true" || v == "1"
}

// load reads the file, sets its variables in the process environment and
// loads the configuration. On success it returns undo, which puts the
// environment back as it was before load, for a reload that is rejected
// later; on failure the environment is already back.
func (o *envOverlay) load() (cfg *config.Config, undo func(), err error) {
	vars, err := config.ReadEnvFile(o.path, o.allowInsecure)
	if err != nil {
		return nil, nil, &usageError{fmt.Errorf("%s: %w", envFileVar, err)}
	}
	prev := o.applied
	o.apply(vars)
	undo = func() { o.apply(prev) }
	cfg, err = config.Load(os.Environ())
	if err != nil {
		undo()
		return nil, nil, configError(err)
	}
	return cfg, undo, nil
}

// apply makes vars the file's contribution to the process environment.
func (o *envOverlay) apply(vars []config.EnvVar) {
	now := make(map[string]bool, len(vars))
	for _, v := range vars {
		now[v.Name] = true
	}
	for _, v := range o.applied {
		if now[v.Name] {
			continue
		}
		if ov := o.orig[v.Name]; ov.set {
			os.Setenv(v.Name, ov.value)
		} else {
			os.Unsetenv(v.Name)
		}
	}
	for _, v := range vars {
		if _, seen := o.orig[v.Name]; !seen {
			val, set := os.LookupEnv(v.Name)
			o.orig[v.Name] = origVar{val, set}
		}
		os.Setenv(v.Name, v.Value)
	}
	o.applied = vars
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
func loadServeConfig(environ []string) (cfg *config.Config, reload func() (*config.Config, func(), error), err error) {
	o := newEnvOverlay(environ)
	if o == nil {
		cfg, err := config.Load(environ)
		if err != nil {
			return nil, nil, configError(err)
		}
		return cfg, nil, nil
	}
	cfg, _, err = o.load()
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
func (d *node) reload(load func() (*config.Config, func(), error)) {
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
	cfg, undo, err := load()
	var res broker.UpdateResult
	if err == nil {
		if res, err = d.apply(cfg); err != nil {
			undo()
		}
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
