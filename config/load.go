package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// globalEnv receives the global variables, CWCREDS_<FIELD>, as envconfig
// spells them with split_words. Every field is a string, so decoding cannot
// fail (envconfig stops at its first error, and every problem must be
// reported at once); load parses and checks the values. There are no
// `envconfig:"NAME"` tags on purpose: such a tag makes envconfig fall back
// to the unprefixed variable NAME, so a stray SOURCE or DURATION in the
// environment would be read. There are no default or required tags either:
// an empty variable means the same as an unset one, which envconfig cannot
// express, so load applies the defaults.
type globalEnv struct {
	Profiles         string `split_words:"true"`
	ListenAddr       string `split_words:"true"`
	ApiURL           string `split_words:"true"` // not APIURL, which split_words leaves as CWCREDS_APIURL
	LogLevel         string `split_words:"true"`
	LogFormat        string `split_words:"true"`
	AllowNonLoopback string `split_words:"true"`
	RuntimeDir       string `split_words:"true"`
	NodeName         string `split_words:"true"`
	// The order is the documentation's (globalVars); a test checks it.
	MetricsListenAddr      string `split_words:"true"`
	AllowInsecureFileModes string `split_words:"true"`
	KeyWarmup              string `split_words:"true"`
	S3Endpoint             string `split_words:"true"`
	S3Region               string `split_words:"true"`
	EnvFile                string `split_words:"true"`
	MaxWorkloadIdentities  string `split_words:"true"`
	UpstreamQps            string `split_words:"true"` // not UpstreamQPS, which split_words spells UPSTREAM_Q_PS
	MaxPendingTokens       string `envconfig:"MAX_PENDING_WORKLOAD_TOKENS"`
}

// profileEnv receives one profile's variables, CWCREDS_PROFILE_<NAME>_<FIELD>.
type profileEnv struct {
	Source          string `split_words:"true"`
	TokenFile       string `split_words:"true"`
	OrgID           string `split_words:"true"`
	ConfigID        string `split_words:"true"`
	Duration        string `split_words:"true"`
	ClientTokenFile string `split_words:"true"`
	IMDS            string `split_words:"true"`
	AllowedUids     string `split_words:"true"` // not AllowedUIDs, which split_words spells ALLOWED_U_IDS
	AllowedGids     string `split_words:"true"`
	Issuers         string `split_words:"true"`
	Audience        string `split_words:"true"`
	Share           string `split_words:"true"`
	JwksURL         string `split_words:"true"`
	AllowPods       string `split_words:"true"`
}

// Load reads the configuration from the CWCREDS_* environment variables and
// validates it. On any problem it returns an *Error listing all of them.
//
// The values come from environ only ("NAME=value" entries, a later one
// winning): os.Environ(), or the process environment with an env file's
// variables after it. Load never reads the process environment itself. It
// also finds the CWCREDS_* variables in environ that nothing reads: a
// mistyped name is a problem, not a silently ignored setting.
//
// Load also reads RUNTIME_DIRECTORY and XDG_RUNTIME_DIR for the default
// CWCREDS_RUNTIME_DIR, CREDENTIALS_DIRECTORY to resolve relative token file
// paths (all from environ), and the host name for the default
// CWCREDS_NODE_NAME. It never reads the token files.
func Load(environ []string) (*Config, error) {
	e := parseEnviron(environ)
	var g globalEnv
	if err := e.decode(envPrefix, &g); err != nil {
		return nil, fmt.Errorf("config: decode environment: %w", err)
	}
	var ps problems
	c := &Config{
		ListenAddr: orDefault(g.ListenAddr, defaultListenAddr),
		APIURL:     orDefault(g.ApiURL, defaultAPIURL),
		LogLevel:   orDefault(g.LogLevel, defaultLogLevel),
		LogFormat:  orDefault(g.LogFormat, defaultLogFormat),
	}

	// CWCREDS_PROFILES comes first: the listed names decide which other
	// variables exist.
	names := splitList(g.Profiles)
	var valid []string
	listed := make([]string, 0, len(names)) // infixes of every listed name, valid or not
	for i, ok := range checkNames(&ps, names) {
		listed = append(listed, envName(names[i]))
		if ok {
			valid = append(valid, names[i])
		}
	}

	c.AllowNonLoopback = loadBool(&ps, varAllowNonLoopback, g.AllowNonLoopback)
	c.AllowInsecureFileModes = loadBool(&ps, varAllowInsecure, g.AllowInsecureFileModes)
	c.KeyWarmup = defaultKeyWarmup
	if g.KeyWarmup != "" {
		ps.record(varKeyWarmup, g.KeyWarmup)
		d, err := time.ParseDuration(g.KeyWarmup)
		if err != nil {
			ps.add(varKeyWarmup, "%s is not a duration; use Go syntax such as 5s or 500ms (0 disables warm-up)",
				show(g.KeyWarmup))
		}
		c.KeyWarmup = d
	}
	c.S3Endpoint, c.S3Region = g.S3Endpoint, g.S3Region
	c.MetricsListenAddr = g.MetricsListenAddr
	c.EnvFile = g.EnvFile
	c.MaxWorkloadIdentities = loadCount(&ps, varMaxIdentities, g.MaxWorkloadIdentities, defaultMaxIdentities)
	c.UpstreamQPS = defaultUpstreamQPS
	if g.UpstreamQps != "" {
		ps.record(varUpstreamQPS, g.UpstreamQps)
		q, err := strconv.ParseFloat(g.UpstreamQps, 64)
		if err != nil {
			ps.add(varUpstreamQPS, "%s is not a number; use mints per second, e.g. 10 or 0.5", show(g.UpstreamQps))
		}
		c.UpstreamQPS = q
	}
	c.MaxPendingWorkloadTokens = loadCount(&ps, varMaxPending, g.MaxPendingTokens, defaultMaxPending)
	var runtimeDirOK bool
	c.RuntimeDir, runtimeDirOK = runtimeDir(&ps, e, g.RuntimeDir)
	c.NodeName = g.NodeName
	if c.NodeName == "" {
		host, err := os.Hostname()
		switch {
		case err != nil:
			ps.add(varNodeName, "the host name could not be read (%v); set the node name", err)
		case host == "":
			ps.add(varNodeName, "the host name is empty; set the node name")
		}
		c.NodeName = host
	}

	// credDir stays "" when relative token file paths cannot be resolved.
	credDir := e[envCredentialsDirectory]
	if credDir != "" && !filepath.IsAbs(credDir) {
		ps.add(envCredentialsDirectory, "is not an absolute path; systemd sets it for LoadCredential=, so unset it or make it absolute")
		credDir = ""
	}
	if credDir != "" {
		credDir = filepath.Clean(credDir)
	}
	c.CredentialsDir = credDir
	for _, name := range valid {
		p, err := loadProfile(&ps, e, name, credDir, c.RuntimeDir, runtimeDirOK)
		if err != nil {
			return nil, err
		}
		c.Profiles = append(c.Profiles, p)
	}
	c.validate(&ps)
	checkUnknown(&ps, environ, listed)
	if err := ps.err(listed); err != nil {
		return nil, err
	}
	return c, nil
}

// loadProfile decodes one profile's variables, reporting values that do
// not parse or resolve; validate checks the rest. credDir is
// $CREDENTIALS_DIRECTORY, or "" when relative token file paths cannot be
// resolved.
func loadProfile(ps *problems, e env, name, credDir, runtimeDir string, runtimeDirOK bool) (Profile, error) {
	en := envName(name)
	var pe profileEnv
	if err := e.decode(profileVarPrefix+en, &pe); err != nil {
		return Profile{}, fmt.Errorf("config: decode profile %q: %w", name, err)
	}
	v := func(suffix string) string { return profileVar(en, suffix) }
	p := Profile{Name: name, EnvName: en, Source: pe.Source, OrgID: pe.OrgID, ConfigID: pe.ConfigID}

	loadWorkload(p.Workload(), &p, pe)
	switch tf := pe.TokenFile; {
	case tf == "":
		// validate reports it, unless the source needs none
	case p.Workload():
		ps.add(v(sfxTokenFile), "%s", msgWorkloadTokenFile)
	case filepath.IsAbs(tf):
		p.TokenFile = filepath.Clean(tf)
	case ps.isBad(envCredentialsDirectory):
		ps.markBad(v(sfxTokenFile)) // the directory is reported
	case credDir == "":
		ps.add(v(sfxTokenFile), "is a relative path and $%s is not set; use an absolute path, "+
			"or load the file with systemd LoadCredential= and give the credential's name", envCredentialsDirectory)
	case !filepath.IsLocal(tf):
		ps.add(v(sfxTokenFile), "is a relative path that leads out of $%s; give the credential's name "+
			"as in LoadCredential=, or an absolute path", envCredentialsDirectory)
	default:
		p.TokenFile = filepath.Join(credDir, tf)
	}

	ps.record(v(sfxDuration), pe.Duration)
	switch {
	case p.Source == sourceAPIToken:
		// An api-token key's lifetime is not configurable: validate
		// refuses any DURATION, parsed or not.
	case pe.Duration == "":
		p.Duration = defaultDuration
	default:
		d, err := time.ParseDuration(pe.Duration)
		if err != nil {
			ps.add(v(sfxDuration), "%s is not a duration; use Go syntax such as 90m or 2h", show(pe.Duration))
		}
		p.Duration = d
	}

	switch ctf := pe.ClientTokenFile; {
	case ctf == "" && p.Workload():
		// no client token: the client presents its OIDC token
	case ctf == "" && !runtimeDirOK:
		ps.markBad(v(sfxClientTokenFile)) // the runtime directory is reported
	case ctf == "":
		p.ClientTokenFile = filepath.Join(runtimeDir, name+".token")
	case !filepath.IsAbs(ctf):
		ps.add(v(sfxClientTokenFile), "is not an absolute path; use a path starting with /, or unset it for %s",
			filepath.Join("<runtime dir>", name+".token"))
	default:
		p.ClientTokenFile = filepath.Clean(ctf)
	}
	if pe.IMDS != "" {
		var ok bool
		if p.IMDS, ok = parseBool(pe.IMDS); !ok {
			ps.add(v(sfxIMDS), "%s is not a boolean; use true or false (or 1 or 0)", show(pe.IMDS))
		}
	}
	p.AllowedUIDs = parseIDs(ps, v(sfxAllowedUIDs), pe.AllowedUids, lookupUser)
	p.AllowedGIDs = parseIDs(ps, v(sfxAllowedGIDs), pe.AllowedGids, lookupGroup)
	p.AllowPods = loadAllowPods(ps, v(sfxAllowPods), p, pe.AllowPods)
	return p, nil
}

// loadBool parses the boolean variable v, reporting a value that is not
// one; unset or empty is false.
func loadBool(ps *problems, v, val string) bool {
	if val == "" {
		return false
	}
	b, ok := parseBool(val)
	if !ok {
		ps.add(v, "%s is not a boolean; use true or false (or 1 or 0)", show(val))
	}
	return b
}

// loadCount parses the whole-number variable v, reporting a value that is
// not one; unset or empty is def. The validator checks its range.
func loadCount(ps *problems, v, val string, def int) int {
	if val == "" {
		return def
	}
	ps.record(v, val)
	n, err := strconv.Atoi(val)
	if err != nil {
		ps.add(v, "%s is not a whole number; use e.g. %d", show(val), def)
	}
	return n
}

// runtimeDir resolves CWCREDS_RUNTIME_DIR and its defaults, and says
// whether the result is usable.
func runtimeDir(ps *problems, e env, explicit string) (string, bool) {
	if explicit != "" {
		if !filepath.IsAbs(explicit) {
			ps.add(varRuntimeDir, "is not an absolute path; use a path starting with /, or unset it for the default")
			return explicit, false
		}
		return filepath.Clean(explicit), true
	}
	// systemd joins several RuntimeDirectory= entries with ':'.
	if rd, _, _ := strings.Cut(e[envRuntimeDirectory], ":"); rd != "" {
		if !filepath.IsAbs(rd) {
			ps.add(envRuntimeDirectory, "is not an absolute path; set %s to an absolute path instead", varRuntimeDir)
			ps.markBad(varRuntimeDir) // reported as $RUNTIME_DIRECTORY's problem
			return rd, false
		}
		return filepath.Clean(rd), true
	}
	// The XDG Base Directory spec says to ignore a relative XDG_RUNTIME_DIR.
	if xdg := e[envXDGRuntimeDir]; filepath.IsAbs(xdg) {
		return filepath.Join(xdg, "cwcreds"), true
	}
	return fallbackRuntimeDir, true
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// orDefault returns v, or def when v is empty.
func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// loadWorkload decodes the workload-oidc settings, with their defaults
// when the profile is one (workload); another source's are kept as written
// for checkNotWorkload to report.
func loadWorkload(workload bool, p *Profile, pe profileEnv) {
	p.Issuers = splitList(pe.Issuers)
	p.Audience, p.Share, p.JWKSURL = pe.Audience, pe.Share, pe.JwksURL
	if workload {
		p.Audience = orDefault(p.Audience, defaultAudience)
		p.Share = orDefault(p.Share, ShareToken)
	}
}
