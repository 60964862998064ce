package config

import (
	"net/netip"
	"strings"
	"time"
)

// Names of the global variables. The envconfig decoding in load.go derives
// the same names from field names; a test checks the two agree.
const (
	envPrefix           = "CWCREDS"
	varProfiles         = "CWCREDS_PROFILES"
	varListenAddr       = "CWCREDS_LISTEN_ADDR"
	varAPIURL           = "CWCREDS_API_URL"
	varLogLevel         = "CWCREDS_LOG_LEVEL"
	varLogFormat        = "CWCREDS_LOG_FORMAT"
	varAllowNonLoopback = "CWCREDS_ALLOW_NON_LOOPBACK"
	varRuntimeDir       = "CWCREDS_RUNTIME_DIR"
	varNodeName         = "CWCREDS_NODE_NAME"
	varMetricsAddr      = "CWCREDS_METRICS_LISTEN_ADDR"
	varAllowInsecure    = "CWCREDS_ALLOW_INSECURE_FILE_MODES"
	varKeyWarmup        = "CWCREDS_KEY_WARMUP"
	varS3Endpoint       = "CWCREDS_S3_ENDPOINT"
	varS3Region         = "CWCREDS_S3_REGION"
	varEnvFile          = "CWCREDS_ENV_FILE"
	varMaxIdentities    = "CWCREDS_MAX_WORKLOAD_IDENTITIES"
	varUpstreamQPS      = "CWCREDS_UPSTREAM_QPS"
	varMaxPending       = "CWCREDS_MAX_PENDING_WORKLOAD_TOKENS"
)

// Per-profile variables are profileVarPrefix + EnvName + "_" + suffix.
const (
	profileVarPrefix   = "CWCREDS_PROFILE_"
	sfxSource          = "SOURCE"
	sfxTokenFile       = "TOKEN_FILE"
	sfxOrgID           = "ORG_ID"
	sfxConfigID        = "CONFIG_ID"
	sfxDuration        = "DURATION"
	sfxClientTokenFile = "CLIENT_TOKEN_FILE"
	sfxIMDS            = "IMDS"
	sfxAllowedUIDs     = "ALLOWED_UIDS"
	sfxAllowedGIDs     = "ALLOWED_GIDS"
	sfxIssuers         = "ISSUERS"
	sfxAudience        = "AUDIENCE"
	sfxShare           = "SHARE"
	sfxJWKSURL         = "JWKS_URL"
	sfxAllowPods       = "ALLOW_PODS"
)

// Variables set by systemd or the session that config also reads.
const (
	envRuntimeDirectory     = "RUNTIME_DIRECTORY"     // systemd RuntimeDirectory=
	envXDGRuntimeDir        = "XDG_RUNTIME_DIR"       // per-user runtime directory
	envCredentialsDirectory = "CREDENTIALS_DIRECTORY" // systemd LoadCredential=
)

// Defaults and limits.
const (
	defaultListenAddr  = "127.0.0.1:791"
	defaultAPIURL      = "https://api.coreweave.com"
	defaultLogLevel    = "info"
	defaultLogFormat   = "json"
	defaultDuration    = time.Hour
	fallbackRuntimeDir = "/run/cwcreds"
	minDuration        = time.Minute
	maxDuration        = 12 * time.Hour
	defaultKeyWarmup   = 5 * time.Second
	maxKeyWarmup       = time.Minute

	defaultMaxIdentities = 10000
	maxMaxIdentities     = 1000000
	defaultUpstreamQPS   = 50.0
	maxUpstreamQPS       = 1000.0
	defaultMaxPending    = 16 // broker.DefaultMaxPendingTokensPerPeer
	maxMaxPending        = 10000
	defaultAudience      = "https://coreweave.com/iam"
)

// Profile sources.
const (
	sourceAccessKey = "access-key"
	sourceAPIToken  = "api-token"
	sourceOIDC      = "oidc"
	sourceSAML      = "saml"
	sourceWorkload  = "workload-oidc"
)

// How a workload-oidc profile shares keys (SHARE).
const (
	ShareToken    = "token"
	ShareIdentity = "identity"
)

// podIdentityAddrs are the link-local addresses pods reach a node agent at
// and AWS SDKs accept over plain http: EKS Pod Identity's IPv4 and IPv6
// addresses, and ECS's 169.254.170.2, the only one botocore < 1.32 accepts.
// CWCREDS_LISTEN_ADDR takes them without CWCREDS_ALLOW_NON_LOOPBACK.
var podIdentityAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.170.23"),
	netip.MustParseAddr("fd00:ec2::23"),
	netip.MustParseAddr("169.254.170.2"),
}

var (
	sources    = []string{sourceAccessKey, sourceAPIToken, sourceOIDC, sourceSAML, sourceWorkload}
	shares     = []string{ShareToken, ShareIdentity}
	logLevels  = []string{"trace", "debug", "info", "warn", "error"}
	logFormats = []string{"json", "console"}
)

// VarDoc documents one environment variable.
type VarDoc struct {
	// Name is the variable's name. Per-profile variables spell the profile
	// part as <NAME>: the profile name upper-cased, with '-' as '_'.
	Name string
	// Default is what an unset or empty variable means: a value, a short
	// phrase when the default is computed, or "(required)".
	Default string
	// Description says what the variable is for and what values it takes.
	// Its last sentence says what a reload (SIGHUP, with CWCREDS_ENV_FILE)
	// does with a change: "Reload: applied..." or "Reload: needs a restart."
	Description string
	// NeedsRestart is set for the variables whose change a reload cannot
	// apply; RestartOnly reports exactly these.
	NeedsRestart bool
}

// globalVar documents a global variable. restart is nil when a reload
// applies a change; otherwise it reports whether the value differs between
// two configurations, for RestartOnly.
type globalVar struct {
	name, def, desc string
	restart         func(old, next *Config) bool
}

// profileSetting documents a per-profile variable. reload says what a
// reload does with a change; restart is as for globalVar, comparing a
// profile before and after (the zero Profile stands for one that is not
// configured).
type profileSetting struct {
	suffix, def, desc string
	reload            string
	restart           func(old, next Profile) bool
}

// What a reload does with a change, as each description's last sentence.
const (
	reloadRestart  = "Reload: needs a restart."
	reloadNewKey   = "Reload: applied; a change drops the profile's cached key and mints a new one."
	reloadKeepsKey = "Reload: applied; the profile keeps its cached key."
	reloadProfiles = "Reload: applied; profiles that did not change keep their cached keys, removed ones are dropped, new ones start minting."
	reloadEnvFile  = "Reload: needs a restart (it names the file a reload reads)."
)

// globalVars and profileVars are the single source of the documentation,
// the typo guard's list of known names, the order problems are reported
// in, and the settings a reload cannot apply.
var globalVars = []globalVar{
	{varProfiles, "(required)",
		"Comma-separated names of the profiles to serve. A name is 1 to 63 characters of a-z, 0-9 and '-', " +
			"starting and ending with a letter or digit. In the per-profile variables below, <NAME> is the " +
			"profile name upper-cased with '-' as '_': profile fast-train is configured by CWCREDS_PROFILE_FAST_TRAIN_*. " +
			reloadProfiles, nil},
	{varListenAddr, defaultListenAddr,
		"Comma-separated host:port addresses the daemon listens on, such as 127.0.0.1:7911,169.254.170.23:7911. " +
			"Each host is an IP address; localhost is refused (it names both " +
			"127.0.0.1 and ::1, and a daemon listening on one leaves the other to any local user): write 127.0.0.1 or [::1]. " +
			"The default port, 791, is below 1024, so no unprivileged user can bind it: under systemd the socket unit " +
			"cwcreds.socket holds it and the daemon needs no capability (its sockets must match the list exactly); run by hand, " +
			"the daemon needs CAP_NET_BIND_SERVICE, or set an unprivileged port such as 127.0.0.1:7911 (the old default) and " +
			"accept that a local user can take it while the daemon is down. The pod identity addresses 169.254.170.23, " +
			"[fd00:ec2::23] and 169.254.170.2, which AWS SDKs accept over plain http and which are never routed off a node, " +
			"are allowed as they are: Kubernetes pods reach the node's daemon there (see README, Pods on Kubernetes), the " +
			"address must be assigned to an interface of the node, and a request from a pod is served only profiles " +
			"that allow pods (ALLOW_PODS). Any other address beyond loopback " +
			"(including an empty host, 0.0.0.0 or ::) is refused unless CWCREDS_ALLOW_NON_LOOPBACK=true. " + reloadRestart,
		func(o, n *Config) bool { return o.ListenAddr != n.ListenAddr }},
	{varAPIURL, defaultAPIURL,
		"Base URL of the CoreWeave API. Must be https, or http with a loopback host, since requests carry bearer " +
			"tokens; no user info, query or fragment. " + reloadRestart,
		func(o, n *Config) bool { return o.APIURL != n.APIURL }},
	{varLogLevel, defaultLogLevel, "Log level: trace, debug, info, warn or error. " + reloadRestart,
		func(o, n *Config) bool { return o.LogLevel != n.LogLevel }},
	{varLogFormat, defaultLogFormat, "Log format: json, or console for people reading a terminal. " + reloadRestart,
		func(o, n *Config) bool { return o.LogFormat != n.LogFormat }},
	{varAllowNonLoopback, "false",
		"Set to true to let CWCREDS_LISTEN_ADDR listen beyond loopback, where other hosts can reach the daemon. " +
			"Takes true, false, 1 or 0. " + reloadRestart,
		func(o, n *Config) bool { return o.AllowNonLoopback != n.AllowNonLoopback }},
	{varRuntimeDir, "$RUNTIME_DIRECTORY or a fallback",
		"Absolute path of the directory for the client token files. Without it the daemon uses $RUNTIME_DIRECTORY " +
			"(set by systemd RuntimeDirectory=; the first entry if it lists several), else $XDG_RUNTIME_DIR/cwcreds, " +
			"else /run/cwcreds. " + reloadRestart,
		func(o, n *Config) bool { return o.RuntimeDir != n.RuntimeDir }},
	{varNodeName, "the host name",
		"Name of this node, sent upstream in the audit attributes of every key. " + reloadRestart,
		func(o, n *Config) bool { return o.NodeName != n.NodeName }},
	{varMetricsAddr, "(none)",
		"A host:port address, such as 10.0.0.5:7913, on which the daemon also serves Prometheus metrics and " +
			"nothing else: GET /metrics, /healthz and /readyz (as on CWCREDS_LISTEN_ADDR); every other path is 404, " +
			"so no credential, status or revoke route is reachable there. That is why it takes any IP address, the " +
			"node's own or 0.0.0.0 included, without CWCREDS_ALLOW_NON_LOOPBACK, and why it checks no Host or proxy " +
			"header: it is how a Prometheus server elsewhere scrapes the daemon without the credential API being " +
			"reachable beyond the node. The host is an IP address, and the port must not be one CWCREDS_LISTEN_ADDR " +
			"binds on the same address. Never socket-activated: the daemon binds it itself, so use an unprivileged " +
			"port. " + reloadRestart,
		func(o, n *Config) bool { return o.MetricsListenAddr != n.MetricsListenAddr }},
	{varAllowInsecure, "false",
		"Set to true to accept upstream token files that their group or other users can read or write. Without " +
			"it such a file fails every mint with a message naming it and its mode: fix it with chmod 600, or hand " +
			"it over with systemd LoadCredential= (files in $CREDENTIALS_DIRECTORY are accepted whatever their " +
			"mode). Needed where the daemon's user cannot own the file, such as a Kubernetes Secret volume (owned " +
			"by root, readable by the pod's fsGroup). It relaxes modes only: a file must still be owned by the " +
			"daemon's user or root. Set in the process environment, it also accepts a CWCREDS_ENV_FILE " +
			"file writable by group or others (the file cannot allow itself). Takes true, false, 1 or 0. " +
			reloadRestart,
		func(o, n *Config) bool { return o.AllowInsecureFileModes != n.AllowInsecureFileModes }},
	{varKeyWarmup, defaultKeyWarmup.String(),
		"How old a newly minted key must be before it replaces the previous one, in Go syntax such as 5s or " +
			"500ms, from 0 (no warm-up) to 1m. CoreWeave's S3 can refuse a brand-new key for a few seconds while " +
			"it propagates, and the previous key stays valid meanwhile, so the daemon keeps serving that one. A " +
			"first key, a key minted while no other can be served and a key minted by revoke are served at once. " +
			reloadRestart,
		func(o, n *Config) bool { return o.KeyWarmup != n.KeyWarmup }},
	{varS3Endpoint, "(none)",
		"URL of the S3 endpoint clients use, such as https://cwobject.com (http is allowed: the check sends no " +
			"secret). When set, the daemon tries every new key against it with one signed ListBuckets before " +
			"serving it, retrying while S3 answers InvalidAccessKeyId (propagation) for up to 1m: a refreshed key " +
			"replaces the previous one only once S3 accepts it (this replaces CWCREDS_KEY_WARMUP), and a first key " +
			"is held back at most 2s, then served anyway. A key S3 refuses (AccessDenied, SignatureDoesNotMatch, " +
			"or InvalidAccessKeyId after 1m) shows in status, /v1/profiles, metrics and an error log line. The " +
			"keys' principal needs permission to list buckets, or every key shows as refused with AccessDenied. " +
			"Requires CWCREDS_S3_REGION. " + reloadRestart,
		func(o, n *Config) bool { return o.S3Endpoint != n.S3Endpoint }},
	{varS3Region, "(none)",
		"Region the S3 check signs for, as clients do (e.g. CoreWeave's availability zone such as US-EAST-04A). " +
			"Required with CWCREDS_S3_ENDPOINT, refused without it. " + reloadRestart,
		func(o, n *Config) bool { return o.S3Region != n.S3Region }},
	{varEnvFile, "(none)",
		"Absolute path of an environment file with the daemon's CWCREDS_* settings (one NAME=value a line, the " +
			"subset of systemd's EnvironmentFile= syntax that means the same to both), read at start and again on " +
			"SIGHUP (systemctl reload cwcreds), so a changed file applies without a restart and a profile removed " +
			"from it is really gone. Set it in the process environment (the unit sets /etc/cwcreds/cwcreds.env), " +
			"not in the file. The file must be owned by the daemon's user or root and not writable by group or " +
			"others. " + reloadEnvFile,
		func(o, n *Config) bool { return o.EnvFile != n.EnvFile }},
	{varMaxIdentities, "10000",
		"Most workload identities (see source workload-oidc) the daemon caches a key for, across all profiles, " +
			"from 1 to 1000000. Past it an identity is dropped, the least recently used of those with no key to serve " +
			"(a token upstream refused, a first mint still waiting) if any, else the least recently used: its key is " +
			"forgotten (it stays valid upstream until it expires) and its next request mints again. Each costs a few " +
			"kilobytes. " + reloadRestart,
		func(o, n *Config) bool { return o.MaxWorkloadIdentities != n.MaxWorkloadIdentities }},
	{varUpstreamQPS, "50",
		"Most mints per second the daemon starts upstream, across all profiles (a token bucket with a burst of " +
			"as many), from 0.1 to 1000. A mint a client is waiting for goes before background refreshes, and a " +
			"429 reply pauses background mints for its Retry-After. The default keeps a node's start-up (a key per " +
			"profile, a first key per pod) within seconds while a runaway or flooded node cannot storm the API. " + reloadRestart,
		func(o, n *Config) bool { return o.UpstreamQPS != n.UpstreamQPS }},
	{varMaxPending, "16",
		"Most workload identities (see source workload-oidc) each peer (a local user, or a pod's address) may have " +
			"in the cache that never held a key (a first mint waiting, or a token CoreWeave refused; one that leaves " +
			"counts a minute more), from 1 to 10000. A new token from a peer at the bound is refused (429 " +
			"TooManyPendingTokens) without an upstream call, so one peer's forged tokens cannot spend the mint budget " +
			"other workloads' first keys wait for. A pod needs two at most (its token, and the next around a rotation); " +
			"raise it only when more workloads than that share a peer and start at once (host-network pods, or " +
			"processes of one local user). " + reloadRestart,
		func(o, n *Config) bool { return o.MaxPendingWorkloadTokens != n.MaxPendingWorkloadTokens }},
}

var profileVars = []profileSetting{
	{sfxSource, "(required)",
		"How the profile gets keys: access-key (an API access token buys keys that live DURATION), api-token " +
			"(an API access token buys keys that live 15 minutes), oidc (an OIDC token such as a projected " +
			"Kubernetes service account token), saml (a SAML response), or workload-oidc: each client presents " +
			"its own OIDC token as the Authorization header (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE pointing at a " +
			"projected service account token), and the daemon mints and caches a key per token or per identity " +
			"(see SHARE); such a profile has no TOKEN_FILE and no client token.", reloadNewKey, nil},
	{sfxTokenFile, "(required, except for workload-oidc)",
		"Path of the file holding the profile's upstream credential: the API access token, OIDC token or SAML " +
			"response. It is read again at every mint, so rotation takes effect at once. A relative path is resolved " +
			"in $CREDENTIALS_DIRECTORY (systemd LoadCredential=), whose files are accepted as systemd made them; " +
			"otherwise the path must be absolute, and the file (a symlink is followed) must be owned by the " +
			"daemon's user or root and readable and writable by its owner only (chmod 600 or 400) unless " +
			"CWCREDS_ALLOW_INSECURE_FILE_MODES=true.", reloadNewKey, nil},
	{sfxOrgID, "(required for oidc, saml and workload-oidc)",
		"CoreWeave organization ID the OIDC or SAML identity belongs to. Only oidc, saml and workload-oidc use " +
			"it; setting it for another source is an error.", reloadNewKey, nil},
	{sfxConfigID, "(required for saml)",
		"ID of the organization's SAML configuration. Only saml uses it; setting it for another source is an error.",
		reloadNewKey, nil},
	{sfxDuration, "1h",
		"Lifetime of the keys the profile mints, from 1m to 12h in whole seconds, in Go syntax such as 90m or 2h. " +
			"Not allowed for api-token, whose keys always live 15 minutes.", reloadNewKey, nil},
	{sfxClientTokenFile, "<runtime dir>/<name>.token",
		"Absolute path of the file holding the token local clients present for this profile (point " +
			"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE at it). Created with a random token if missing. Each profile " +
			"needs its own file.", reloadKeepsKey, nil},
	{sfxIMDS, "false",
		"Set to true to also serve this profile's keys as the EC2 instance role on the daemon's address " +
			"(IMDSv2: PUT /latest/api/token, then /latest/meta-data/iam/security-credentials/<name>), for clients " +
			"that only read instance metadata; point AWS_EC2_METADATA_SERVICE_ENDPOINT at http://127.0.0.1:<port>/. " +
			"Any local process can get an IMDS session token, so this profile's keys are open to every local user. " +
			"At most one profile. Takes true, false, 1 or 0.", reloadRestart,
		func(o, n Profile) bool { return o.IMDS != n.IMDS }},
	{sfxAllowedUIDs, "(any user)",
		"Comma-separated users allowed this profile, as uids or user names (names are resolved at start-up and " +
			"at each reload). " +
			"When this or ALLOWED_GIDS is set, the daemon identifies the local user owning each client's TCP " +
			"connection and refuses the profile (403) to every other user, and to connections whose owner it cannot " +
			"find, even with the right client token; this also applies to the profile's IMDS role. It cannot tell apart " +
			"processes of one uid, such as containers sharing it, and root can always read the keys.", reloadKeepsKey, nil},
	{sfxAllowedGIDs, "(any group)",
		"Comma-separated groups allowed this profile, as gids or group names (names are resolved at start-up and " +
			"at each reload): " +
			"a user whose primary or supplementary group, in the user database, is listed may use the profile. " +
			"Groups the process gained or dropped after login do not count. Combined with ALLOWED_UIDS, either match allows.",
		reloadKeepsKey, nil},
	{sfxIssuers, "(required for workload-oidc)",
		"Comma-separated OIDC issuers (the tokens' iss, exactly) a workload-oidc profile accepts, such as your " +
			"cluster's service account issuer; each an https URL (http only with a loopback host). A token from " +
			"another issuer is refused without an upstream call. Only workload-oidc uses it.", reloadNewKey, nil},
	{sfxAudience, defaultAudience,
		"Audience a workload-oidc token must carry in its aud: the audience of the projected token (the one " +
			"CoreWeave's Workload Identity Federation expects). Only workload-oidc uses it.", reloadNewKey, nil},
	{sfxShare, ShareToken,
		"How a workload-oidc profile shares keys: token (one key per distinct token; the daemon checks the " +
			"token's claims and upstream verifies its signature at the mint, so only a holder of that exact token " +
			"reaches its key) or identity (one key per issuer and subject: the daemon verifies every token's " +
			"signature against the issuer's keys, and every token of one service account, including rotated ones " +
			"and other pods', shares the key; CoreWeave's principal is role/<iss>:<sub> either way). Only " +
			"workload-oidc uses it.", reloadNewKey, nil},
	{sfxJWKSURL, "OIDC discovery",
		"URL of the issuers' JSON Web Key Set, for SHARE=identity; by default each issuer's is found by OIDC " +
			"discovery at <iss>/.well-known/openid-configuration. https, or http only with a loopback host. Only " +
			"SHARE=identity uses it.", reloadNewKey, nil},
	// Pods (issue 15).
	{sfxAllowPods, "false (true for workload-oidc)",
		"Set to true to serve this profile to clients beyond loopback, such as Kubernetes pods calling the node's " +
			"pod identity address (see CWCREDS_LISTEN_ADDR): any pod that holds the profile's client token then gets its " +
			"keys, so hand that token only to pods meant to share them. A workload-oidc profile is always served to pods " +
			"(each caller's own token is its identity), and false is refused for it. A profile restricted by " +
			"ALLOWED_UIDS or ALLOWED_GIDS is never served to pods (a pod's connection has no local user to check), so " +
			"the two cannot be combined. The IMDS role and the admin routes stay loopback-only whatever it says. " +
			"Takes true, false, 1 or 0.", reloadKeepsKey, nil},
}

// Vars documents every variable config reads, global ones first, in the
// order Usage prints them. README tables and `cwcreds help` are built from
// it, so code and documentation share one source.
func Vars() []VarDoc {
	out := make([]VarDoc, 0, len(globalVars)+len(profileVars))
	for _, g := range globalVars {
		out = append(out, VarDoc{Name: g.name, Default: g.def, Description: g.desc, NeedsRestart: g.restart != nil})
	}
	for _, p := range profileVars {
		out = append(out, VarDoc{Name: profileVarPrefix + "<NAME>_" + p.suffix, Default: p.def,
			Description: p.desc + " " + p.reload, NeedsRestart: p.restart != nil})
	}
	return out
}

// Usage returns the human-readable reference of every variable: its name
// and default on one line, then its meaning, indented and wrapped to fit
// an 80-column terminal.
func Usage() string {
	var b strings.Builder
	for i, v := range Vars() {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("  ")
		b.WriteString(v.Name)
		switch {
		case strings.HasPrefix(v.Default, "("):
			b.WriteString(" " + v.Default)
		case v.Default != "":
			b.WriteString(" (default: " + v.Default + ")")
		}
		b.WriteByte('\n')
		for _, line := range wrap(v.Description, 72) {
			b.WriteString("      ")
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// DescriptionLines returns v.Description word-wrapped to width bytes per
// line, for generated documentation (Usage, the environment file example).
func (v VarDoc) DescriptionLines(width int) []string { return wrap(v.Description, width) }

// wrap splits s into lines of at most width bytes, breaking at spaces;
// a longer word gets a line of its own.
func wrap(s string, width int) []string {
	var lines []string
	var line string
	for _, w := range strings.Fields(s) {
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) <= width:
			line += " " + w
		default:
			lines = append(lines, line)
			line = w
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
