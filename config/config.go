// Package config reads and validates the cwcreds daemon's configuration,
// which comes entirely from CWCREDS_* environment variables (see Usage for
// the reference, or Vars for the same data structured).
//
// A configuration names its profiles in CWCREDS_PROFILES and configures each
// one with CWCREDS_PROFILE_<NAME>_* variables, where <NAME> is the profile
// name upper-cased with '-' as '_':
//
//	CWCREDS_PROFILES=train,fast-eval
//	CWCREDS_PROFILE_TRAIN_SOURCE=oidc
//	CWCREDS_PROFILE_TRAIN_TOKEN_FILE=/var/run/secrets/tokens/cwcreds
//	CWCREDS_PROFILE_TRAIN_ORG_ID=cw1234
//	CWCREDS_PROFILE_FAST_EVAL_SOURCE=api-token
//	CWCREDS_PROFILE_FAST_EVAL_TOKEN_FILE=api-token # in $CREDENTIALS_DIRECTORY
//
// Load reports every problem at once, each naming the variable at fault and
// the fix, and rejects CWCREDS_* variables that nothing reads, so a typo
// never silently falls back to a default. It never reads the token files
// and never puts a value that could be a secret into an error.
//
// The package is plain data and validation: it imports no other cwcreds
// package, and callers hand the parts they need down to broker and server.
package config

import (
	"fmt"
	"slices"
	"time"
)

// Config is the daemon's validated configuration.
type Config struct {
	// ListenAddr is the comma-separated list of host:port addresses the
	// daemon listens on (CWCREDS_LISTEN_ADDR); ListenAddrs splits it.
	ListenAddr string
	// MetricsListenAddr is the host:port of the metrics-only listener, or
	// "" for none (CWCREDS_METRICS_LISTEN_ADDR). It serves no credential,
	// so it may be any IP address whatever AllowNonLoopback says.
	MetricsListenAddr string
	// APIURL is the base URL of the CoreWeave API (CWCREDS_API_URL).
	APIURL string
	// LogLevel is trace, debug, info, warn or error (CWCREDS_LOG_LEVEL).
	LogLevel string
	// LogFormat is json or console (CWCREDS_LOG_FORMAT).
	LogFormat string
	// AllowNonLoopback permits a ListenAddr beyond loopback
	// (CWCREDS_ALLOW_NON_LOOPBACK).
	AllowNonLoopback bool
	// RuntimeDir is the absolute directory that holds the default client
	// token files (CWCREDS_RUNTIME_DIR).
	RuntimeDir string
	// NodeName identifies this node in the audit attributes sent upstream
	// (CWCREDS_NODE_NAME).
	NodeName string
	// AllowInsecureFileModes accepts upstream token files that their group
	// or others can read or write (CWCREDS_ALLOW_INSECURE_FILE_MODES).
	AllowInsecureFileModes bool
	// CredentialsDir is systemd's $CREDENTIALS_DIRECTORY (LoadCredential=),
	// absolute and cleaned, or "" when it is unset or unusable. Relative
	// token file paths are resolved in it, and token files that lie in it
	// are accepted whatever their mode: systemd owns that read-only mount.
	// It comes from the process environment, so a reload never changes it.
	CredentialsDir string
	// KeyWarmup is how old a key minted to replace a still-servable one
	// must be before it is served, 0 to 1m; 0 disables warm-up
	// (CWCREDS_KEY_WARMUP).
	KeyWarmup time.Duration
	// S3Endpoint, if set, is the S3 endpoint every new key is checked
	// against before it is served (CWCREDS_S3_ENDPOINT); S3Region is the
	// region the check signs for (CWCREDS_S3_REGION).
	S3Endpoint string
	S3Region   string
	// EnvFile is the absolute path of the environment file the daemon reads
	// at start and on SIGHUP, or "" (CWCREDS_ENV_FILE). Load does not read
	// it: the caller applies ReadEnvFile's variables before calling Load.
	EnvFile string
	// MaxWorkloadIdentities bounds the workload identities cached across
	// all workload-oidc profiles (CWCREDS_MAX_WORKLOAD_IDENTITIES).
	MaxWorkloadIdentities int
	// UpstreamQPS is the daemon's upstream mint budget, in mints per
	// second (CWCREDS_UPSTREAM_QPS).
	UpstreamQPS float64
	// MaxPendingWorkloadTokens bounds, per peer, the workload identities
	// cached that never held a key (CWCREDS_MAX_PENDING_WORKLOAD_TOKENS).
	MaxPendingWorkloadTokens int
	// Profiles are the configured profiles, in CWCREDS_PROFILES order.
	Profiles []Profile
}

// Profile is one profile: a named way of getting CoreWeave AI Object
// Storage keys, configured by CWCREDS_PROFILE_<EnvName>_* variables.
type Profile struct {
	// Name is 1 to 63 characters of [a-z0-9-], starting and ending with a
	// letter or digit.
	Name string
	// EnvName is Name upper-cased with '-' as '_': the infix of the
	// profile's variable names.
	EnvName string
	// Source is "access-key", "api-token", "oidc", "saml" or
	// "workload-oidc".
	Source string
	// TokenFile is the absolute path of the upstream credential; "" for
	// workload-oidc, whose clients present their own.
	TokenFile string
	// OrgID is the organization ID; set for oidc, saml and workload-oidc
	// only.
	OrgID string
	// ConfigID is the SAML configuration ID; set for saml only.
	ConfigID string
	// Duration is the lifetime of minted keys, 1m to 12h in whole seconds.
	// It is 0 for api-token, whose keys always live 15 minutes.
	Duration time.Duration
	// ClientTokenFile is the absolute path of the token local clients
	// present for this profile; "" for workload-oidc.
	ClientTokenFile string
	// IMDS makes the daemon also serve this profile's keys as the EC2
	// instance role (IMDSv2 emulation). At most one profile sets it.
	IMDS bool
	// AllowedUIDs and AllowedGIDs, when either is non-empty, restrict the
	// profile to local users with one of these uids, or whose user database
	// groups include one of these gids. Names in the variables are resolved
	// by Load. Both empty: any local user with the client token.
	AllowedUIDs []uint32
	AllowedGIDs []uint32

	// Issuers, Audience, Share and JWKSURL configure a workload-oidc
	// profile (and are empty for every other source): the token issuers
	// accepted, the audience required, ShareToken or ShareIdentity, and
	// for identity sharing the key set URL ("" for OIDC discovery).
	Issuers  []string
	Audience string
	Share    string
	JWKSURL  string
	// AllowPods serves the profile to peers beyond loopback, such as pods
	// calling a pod identity address (CWCREDS_PROFILE_<NAME>_ALLOW_PODS).
	// Load sets it for every workload-oidc profile, and never for a
	// Restricted one.
	AllowPods bool
}

// Workload reports whether clients present their own OIDC token
// (source workload-oidc) rather than a client token.
func (p Profile) Workload() bool { return p.Source == sourceWorkload }

// Restricted reports whether the profile is limited to some local users.
func (p Profile) Restricted() bool { return len(p.AllowedUIDs) > 0 || len(p.AllowedGIDs) > 0 }

// Fingerprint identifies what decides which key the profile mints: its
// source, upstream token file path, organization and SAML configuration
// IDs, and key lifetime. Two configurations of a profile with equal
// fingerprints mint the same kind of key, so a reload keeps its cached key;
// the client token file and the allowed users and groups do not count
// (they decide who gets the key, not which). It holds paths and IDs only,
// never a secret, so it may be logged; compare it, do not parse it.
func (p Profile) Fingerprint() string {
	f := fmt.Sprintf("source=%q token_file=%q org_id=%q config_id=%q duration=%ds",
		p.Source, p.TokenFile, p.OrgID, p.ConfigID, int64(p.Duration/time.Second))
	if p.Workload() {
		f += fmt.Sprintf(" issuers=%q audience=%q share=%q jwks_url=%q", p.Issuers, p.Audience, p.Share, p.JWKSURL)
	}
	return f
}

// ListenAddrs returns the addresses of ListenAddr, in order.
func (c *Config) ListenAddrs() []string { return splitList(c.ListenAddr) }

// LocalAddr returns the address commands on this node use to reach the
// daemon: the first loopback address of ListenAddr, else its first.
func (c *Config) LocalAddr() string { return localAddr(c.ListenAddr) }

// IMDSProfile returns the name of the profile served as the EC2 instance
// role, or "" when IMDS emulation is off.
func (c *Config) IMDSProfile() string {
	for _, p := range c.Profiles {
		if p.IMDS {
			return p.Name
		}
	}
	return ""
}

// Profile returns the profile called name.
func (c *Config) Profile(name string) (Profile, bool) {
	i := slices.IndexFunc(c.Profiles, func(p Profile) bool { return p.Name == name })
	if i < 0 {
		return Profile{}, false
	}
	return c.Profiles[i], true
}

// Validate checks a Config built in code rather than by Load, with the
// rules Load applies after decoding (validate). Problems name the variables
// that would set the offending fields. It returns nil or an *Error.
func (c *Config) Validate() error {
	var ps problems
	names := make([]string, len(c.Profiles))
	envNames := make([]string, len(c.Profiles))
	for i, p := range c.Profiles {
		names[i], envNames[i] = p.Name, envName(p.Name)
	}
	for i, ok := range checkNames(&ps, names) {
		if p := c.Profiles[i]; ok && p.EnvName != envNames[i] {
			ps.add(varProfiles, "profile %q has EnvName %q; it must be %q", p.Name, p.EnvName, envNames[i])
		}
	}
	c.validate(&ps)
	return ps.err(envNames)
}

// checkNames reports the invalid and repeated names of CWCREDS_PROFILES
// (or of a built Config's profiles), and says which ones are usable: valid,
// and listed for the first time.
func checkNames(ps *problems, names []string) []bool {
	ok := make([]bool, len(names))
	seen := make(map[string]bool)
	for i, name := range names {
		switch msg := checkName(name); {
		case msg != "":
			ps.add(varProfiles, "%s", msg)
		case seen[name]:
			ps.add(varProfiles, msgDuplicate, show(name))
		default:
			ok[i] = true
		}
		seen[name] = true
	}
	return ok
}

// validate applies every rule on the decoded values of c: Load's after
// decoding, and Validate's. A variable whose value decoding already
// refused (ps.isBad) is not reported again; a message quotes the value as
// it was written when decoding saw it (ps.shown).
func (c *Config) validate(ps *problems) {
	ps.check(varListenAddr, checkListenAddrs(c.ListenAddr, c.AllowNonLoopback))
	if c.MetricsListenAddr != "" {
		ps.check(varMetricsAddr, checkMetricsAddr(c.MetricsListenAddr, c.ListenAddr))
	}
	ps.check(varAPIURL, checkAPIURL(c.APIURL))
	ps.check(varLogLevel, checkEnum(c.LogLevel, logLevels, "log level"))
	ps.check(varLogFormat, checkEnum(c.LogFormat, logFormats, "log format"))
	ps.check(varKeyWarmup, checkKeyWarmup(c.KeyWarmup, ps.shown(varKeyWarmup, c.KeyWarmup.String())))
	if c.S3Endpoint != "" || c.S3Region != "" {
		ps.check(varS3Endpoint, checkS3Endpoint(c.S3Endpoint))
		ps.check(varS3Region, checkS3Region(c.S3Region, c.S3Endpoint))
	}
	if c.EnvFile != "" {
		ps.check(varEnvFile, checkAbs(c.EnvFile))
	}
	ps.check(varRuntimeDir, checkAbs(c.RuntimeDir))
	// Zero (a Config built in code) means the default.
	if c.MaxWorkloadIdentities < 0 || c.MaxWorkloadIdentities > maxMaxIdentities || ps.isSet(varMaxIdentities) && c.MaxWorkloadIdentities == 0 {
		ps.check(varMaxIdentities, fmt.Sprintf("%s is out of range; use a whole number from 1 to %d",
			ps.shown(varMaxIdentities, fmt.Sprint(c.MaxWorkloadIdentities)), maxMaxIdentities))
	}
	if c.UpstreamQPS != 0 && !(c.UpstreamQPS >= 0.1 && c.UpstreamQPS <= maxUpstreamQPS) || ps.isSet(varUpstreamQPS) && c.UpstreamQPS == 0 {
		ps.check(varUpstreamQPS, fmt.Sprintf("%s is out of range; use a number of mints per second from 0.1 to %g",
			ps.shown(varUpstreamQPS, fmt.Sprint(c.UpstreamQPS)), maxUpstreamQPS))
	}
	if c.MaxPendingWorkloadTokens < 0 || c.MaxPendingWorkloadTokens > maxMaxPending || ps.isSet(varMaxPending) && c.MaxPendingWorkloadTokens == 0 {
		ps.check(varMaxPending, fmt.Sprintf("%s is out of range; use a whole number from 1 to %d",
			ps.shown(varMaxPending, fmt.Sprint(c.MaxPendingWorkloadTokens)), maxMaxPending))
	}
	if len(c.Profiles) == 0 {
		ps.check(varProfiles, msgNoProfiles)
	}
	for _, p := range c.Profiles {
		en := envName(p.Name)
		v := func(suffix string) string { return profileVar(en, suffix) }
		srcOK := checkSource(ps, v(sfxSource), p.Source)
		switch {
		case srcOK && p.Workload():
			checkWorkload(ps, en, p)
		case p.TokenFile == "":
			ps.check(v(sfxTokenFile), msgTokenFileRequired)
		default:
			ps.check(v(sfxTokenFile), checkAbs(p.TokenFile))
		}
		if !p.Workload() {
			checkNotWorkload(ps, en, p)
		}
		if srcOK {
			checkIDs(ps, en, p.Source, p.OrgID != "", p.ConfigID != "")
		}
		dv := v(sfxDuration)
		switch {
		case srcOK && p.Source == sourceAPIToken:
			if p.Duration != 0 || ps.shown(dv, "") != "" {
				ps.check(dv, msgAPITokenDuration)
			}
		default:
			ps.check(dv, checkDuration(p.Duration, ps.shown(dv, p.Duration.String())))
		}
		if !p.Workload() {
			ps.check(v(sfxClientTokenFile), checkAbs(p.ClientTokenFile))
		}
		checkIDList(ps, v(sfxAllowedUIDs), p.AllowedUIDs)
		checkIDList(ps, v(sfxAllowedGIDs), p.AllowedGIDs)
		checkAllowPods(ps, v(sfxAllowPods), p)
	}
	checkAcrossProfiles(ps, c.Profiles)
}
