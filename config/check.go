package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Messages used by both Load and Validate.
const (
	msgWorkloadTokenFile = "source workload-oidc takes each client's own OIDC token from its request and holds no " +
		"upstream credential; remove it"
	msgNoProfiles        = "required: list the profiles to serve, comma-separated, e.g. CWCREDS_PROFILES=train,eval"
	msgDuplicate         = "profile %s is listed more than once; list each profile once"
	msgTokenFileRequired = "required: set the path of the profile's upstream credential file " +
		"(an absolute path, or the name of a systemd LoadCredential= credential)"
	msgAPITokenDuration = "api-token keys always live 15 minutes (fixed upstream), so it cannot be set; " +
		"remove it, or use source access-key to choose the lifetime"
)

// maxShown is the longest value a message quotes. Values that are wrong
// only by spelling (a level, a source, a duration) are short; a longer
// value may be a secret pasted into the wrong variable, so it is described
// rather than quoted.
const maxShown = 32

// show quotes v for a message, or describes it when it is too long to be a
// mistyped keyword.
func show(v string) string {
	if len(v) > maxShown {
		return fmt.Sprintf("a %d-character value", len(v))
	}
	return strconv.Quote(v)
}

// envName maps a profile name to the infix of its variables.
func envName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// profileVar returns the name of one of a profile's variables.
func profileVar(envName, suffix string) string {
	return profileVarPrefix + envName + "_" + suffix
}

// checkName returns what is wrong with a profile name, or "".
func checkName(name string) string {
	switch {
	case name == "":
		return "a profile name is empty; give every profile a name"
	case len(name) > 63:
		return fmt.Sprintf("profile name %s is longer than 63 characters; shorten it", show(name))
	case strings.ContainsFunc(name, func(r rune) bool { return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' }):
		return fmt.Sprintf("profile name %s may contain only lower-case letters, digits and '-'; rename it", show(name))
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Sprintf("profile name %s must start and end with a letter or digit; rename it", show(name))
	}
	return ""
}

// checkListenAddrs returns what is wrong with CWCREDS_LISTEN_ADDR, a
// comma-separated list of listen addresses, or "".
func checkListenAddrs(list string, allowNonLoopback bool) string {
	addrs := splitList(list)
	if len(addrs) == 0 {
		return fmt.Sprintf("lists no address; use e.g. %s, or unset it", defaultListenAddr)
	}
	var msgs []string
	type bound struct {
		host, port string
	}
	var seen []bound
	for _, a := range addrs {
		if msg := checkListenAddr(a, allowNonLoopback); msg != "" {
			msgs = append(msgs, msg)
			continue
		}
		host, port, _ := net.SplitHostPort(a)
		ip, _ := netip.ParseAddr(host)
		for _, b := range seen {
			bip, _ := netip.ParseAddr(b.host)
			switch {
			case port != b.port || port == "0":
			case ip.Unmap() == bip.Unmap() && host != "" && b.host != "":
				msgs = append(msgs, fmt.Sprintf("%s is listed twice; list each address once", show(a)))
			case host == "" || b.host == "" || ip.IsUnspecified() || bip.IsUnspecified():
				msgs = append(msgs, fmt.Sprintf("%s and an every-interface address share port %s, so the daemon cannot bind both; "+
					"list specific addresses, or the every-interface one alone", show(a), port))
			}
		}
		seen = append(seen, bound{host, port})
	}
	return strings.Join(msgs, "; ")
}

// exampleMetricsAddr is the CWCREDS_METRICS_LISTEN_ADDR messages suggest:
// a node's own address, where Prometheus reaches it.
const exampleMetricsAddr = "10.0.0.5:7913"

// checkMetricsAddr returns what is wrong with CWCREDS_METRICS_LISTEN_ADDR
// (not empty), or "": a host:port with an IP literal host, any address
// (it serves no credential), that no address of listenList (the
// comma-separated CWCREDS_LISTEN_ADDR) binds too.
func checkMetricsAddr(addr, listenList string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%s is not host:port; use e.g. %s (an address of this node and a free port), or unset it",
			show(addr), exampleMetricsAddr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("port %s is not a number from 0 to 65535; use e.g. %s", show(port), exampleMetricsAddr)
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "":
		return fmt.Sprintf("%s has no host; write the address, e.g. %s, or 0.0.0.0:%s for every IPv4 interface",
			show(addr), exampleMetricsAddr, port)
	case err != nil:
		return fmt.Sprintf("host %s is not an IP address (the daemon does not resolve names); use e.g. %s",
			show(host), exampleMetricsAddr)
	case port == "0":
		return "" // the system picks a free port: no clash possible
	}
	for _, a := range splitList(listenList) {
		lhost, lport, err := net.SplitHostPort(a)
		if err != nil || lport != port {
			continue
		}
		lip, lerr := netip.ParseAddr(lhost)
		if lhost == "" || ip.IsUnspecified() || lerr == nil && (lip.IsUnspecified() || lip.Unmap() == ip.Unmap()) {
			return fmt.Sprintf("%s and %s's %s both bind port %s on the same address, so the daemon cannot listen on both; "+
				"give the metrics listener a port of its own", show(addr), varListenAddr, show(a), port)
		}
	}
	return ""
}

// isPodIdentityAddr reports whether ip is one of the pod identity
// addresses (podIdentityAddrs).
func isPodIdentityAddr(ip netip.Addr) bool {
	return slices.Contains(podIdentityAddrs, ip.Unmap())
}

// localAddr returns the address of the comma-separated list commands on
// this node dial: its first loopback one, else its first, else "".
func localAddr(list string) string {
	addrs := splitList(list)
	for _, a := range addrs {
		if host, _, err := net.SplitHostPort(a); err == nil && isLoopbackHost(host) {
			return a
		}
	}
	if len(addrs) == 0 {
		return ""
	}
	return addrs[0]
}

// loadAllowPods parses the ALLOW_PODS variable v of profile p (its source
// and restriction decoded), reporting only a value that is not a boolean:
// unset is false, except for an unrestricted workload-oidc profile, which
// is always served to pods. The rules on the value are checkAllowPods',
// applied by validate to a loaded Config as to one built in code.
func loadAllowPods(ps *problems, v string, p Profile, val string) bool {
	if val == "" {
		return p.Source == sourceWorkload && !p.Restricted()
	}
	ps.record(v, val)
	b, ok := parseBool(val)
	if !ok {
		ps.add(v, "%s is not a boolean; use true or false (or 1 or 0)", show(val))
	}
	return b
}

// msgPodsRestricted: a pod's connection has no local user to check.
const msgPodsRestricted = "a profile restricted by ALLOWED_UIDS or ALLOWED_GIDS is never served to pods (a pod's connection " +
	"has no local user the daemon can check); remove ALLOW_PODS, or the restriction"

// msgPodsWorkloadOff: ALLOW_PODS=false on a workload-oidc profile.
const msgPodsWorkloadOff = "a workload-oidc profile is always served to pods (each caller's own token is its identity); remove it"

// checkAllowPods reports a profile served to pods that is also restricted
// to some local users, and a workload-oidc profile whose ALLOW_PODS was
// set to false (a restricted one is not served to pods without it).
func checkAllowPods(ps *problems, v string, p Profile) {
	switch {
	case p.AllowPods && p.Restricted():
		ps.check(v, msgPodsRestricted)
	case !p.AllowPods && p.Workload() && ps.isSet(v):
		ps.check(v, msgPodsWorkloadOff)
	}
}

// checkListenAddr returns what is wrong with a listen address, or "".
func checkListenAddr(addr string, allowNonLoopback bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%s is not host:port; use e.g. %s", show(addr), defaultListenAddr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("port %s is not a number from 0 to 65535; use e.g. %s", show(port), defaultListenAddr)
	}
	nodeLocal := false // loopback, or a pod identity address
	switch host {
	case "": // every interface
	case "localhost":
		// Clients resolving localhost try ::1 first, and a daemon that
		// listens on 127.0.0.1 only leaves [::1]:port free for any local
		// user to bind and receive their tokens.
		return fmt.Sprintf("host localhost names both 127.0.0.1 and ::1, and the daemon would listen on one only: "+
			"a local user could listen on the other and receive clients' tokens; write 127.0.0.1:%s (what AWS SDKs accept) or [::1]:%s",
			port, port)
	default:
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Sprintf("host %s is not an IP address (the daemon does not resolve names); use e.g. %s",
				show(host), defaultListenAddr)
		}
		nodeLocal = ip.Unmap().IsLoopback() || isPodIdentityAddr(ip)
	}
	if !nodeLocal && !allowNonLoopback {
		return fmt.Sprintf("%s listens beyond loopback, where other hosts can reach the daemon; "+
			"use a loopback address such as 127.0.0.1:%s, or set %s=true if that is intended",
			show(addr), port, varAllowNonLoopback)
	}
	return ""
}

// checkAPIURL returns what is wrong with the API base URL, or "". The URL
// itself is never quoted: it could hold user info or a query with a secret.
func checkAPIURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "is not a valid URL; use an absolute https URL such as " + defaultAPIURL
	case u.Scheme == "" || u.Opaque != "":
		return "is not an absolute URL; write the scheme and host, e.g. " + defaultAPIURL
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("scheme %s is not supported; use https", show(u.Scheme))
	case u.User != nil:
		return "must not contain user info; remove the user@ part (the daemon authenticates with each profile's token file)"
	case u.Hostname() == "":
		return "has no host; use e.g. " + defaultAPIURL
	case u.RawQuery != "" || u.ForceQuery:
		return "must not have a query; remove the ?... part"
	case strings.Contains(s, "#"):
		return "must not have a fragment; remove the #... part"
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		return fmt.Sprintf("plain http to %s would send bearer tokens unencrypted; use https "+
			"(http is allowed only for a loopback host such as 127.0.0.1)", show(u.Hostname()))
	}
	return ""
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// checkEnum returns what is wrong with an enumerated value, or "".
func checkEnum(v string, allowed []string, what string) string {
	if slices.Contains(allowed, v) {
		return ""
	}
	return fmt.Sprintf("%s is not a %s; use one of %s", show(v), what, strings.Join(allowed, ", "))
}

// parseBool parses a boolean strictly: true, false, 1 or 0.
func parseBool(v string) (b, ok bool) {
	switch v {
	case "true", "1":
		return true, true
	case "false", "0":
		return false, true
	}
	return false, false
}

// checkAbs returns what is wrong with a path that must be absolute, or "".
// The path is not quoted: a value in a path variable may be a secret
// pasted into the wrong place.
func checkAbs(path string) string {
	switch {
	case path == "":
		return "is empty; set an absolute path"
	case !filepath.IsAbs(path):
		return "is not an absolute path; use a path starting with /"
	}
	return ""
}

// checkSource reports a missing or unknown source and says whether src is
// one of the four.
func checkSource(ps *problems, v, src string) bool {
	switch {
	case src == "":
		ps.add(v, "required: set it to one of %s", strings.Join(sources, ", "))
	case !slices.Contains(sources, src):
		ps.add(v, "%s is not a source; use one of %s", show(src), strings.Join(sources, ", "))
	default:
		return true
	}
	return false
}

// checkIDs reports an ORG_ID or CONFIG_ID that source needs but lacks, or
// has but never reads.
func checkIDs(ps *problems, envName, source string, orgSet, configSet bool) {
	needOrg := source == sourceOIDC || source == sourceSAML || source == sourceWorkload
	needConfig := source == sourceSAML
	switch {
	case needOrg && !orgSet:
		ps.add(profileVar(envName, sfxOrgID), "required for source %q: set the CoreWeave organization ID the identity belongs to", source)
	case !needOrg && orgSet:
		ps.add(profileVar(envName, sfxOrgID), "source %q does not use an organization ID (only oidc, saml and workload-oidc do); remove it", source)
	}
	switch {
	case needConfig && !configSet:
		ps.add(profileVar(envName, sfxConfigID), "required for source %q: set the ID of the organization's SAML configuration", source)
	case !needConfig && configSet:
		ps.add(profileVar(envName, sfxConfigID), "source %q does not use a SAML configuration ID (only saml does); remove it", source)
	}
}

// checkDuration returns what is wrong with a key lifetime, or "". shown is
// how the message spells the value.
func checkDuration(d time.Duration, shown string) string {
	switch {
	case d < minDuration || d > maxDuration:
		return fmt.Sprintf("%s is out of range; use 1m to 12h", shown)
	case d%time.Second != 0:
		return fmt.Sprintf("%s is not a whole number of seconds; use e.g. 90s or 2h", shown)
	}
	return ""
}

// checkKeyWarmup returns what is wrong with a key warm-up, or "". shown is
// how the message spells the value.
func checkKeyWarmup(d time.Duration, shown string) string {
	switch {
	case d < 0:
		return fmt.Sprintf("%s is negative; use a duration from 0 (no warm-up) to 1m, such as 5s", shown)
	case d > maxKeyWarmup:
		return fmt.Sprintf("%s is longer than 1m: a new key propagates within seconds, and the previous key must "+
			"outlive the warm-up; use e.g. 5s (0 disables it)", shown)
	}
	return ""
}

// checkAcrossProfiles reports conflicts between profiles: two profiles
// whose variable names overlap (profile "a" reads
// CWCREDS_PROFILE_A_CLIENT_TOKEN_FILE, which is profile "a-client"'s
// TOKEN_FILE), two profiles sharing a client token file, and a client token
// file that is some profile's upstream credential. Profiles listed twice
// are skipped: that is reported already.
func checkAcrossProfiles(ps *problems, profiles []Profile) {
	owner := make(map[string]string)         // variable name -> profile
	clientFiles := make(map[string]string)   // client token file -> profile
	upstreamFiles := make(map[string]string) // upstream token file -> profile
	seen := make(map[string]bool)
	var unique []Profile
	for _, p := range profiles {
		if seen[p.Name] || checkName(p.Name) != "" {
			continue
		}
		seen[p.Name] = true
		unique = append(unique, p)
		if en := envName(p.Name); !ps.isBad(profileVar(en, sfxTokenFile)) && p.TokenFile != "" {
			if _, dup := upstreamFiles[p.TokenFile]; !dup {
				upstreamFiles[p.TokenFile] = p.Name
			}
		}
	}
	imdsOwner := ""
	for _, p := range unique {
		if !p.IMDS {
			continue
		}
		if imdsOwner != "" {
			ps.add(profileVar(envName(p.Name), sfxIMDS), "profile %q already answers as the EC2 instance role; "+
				"at most one profile may set IMDS=true, so remove it from one of them", imdsOwner)
			continue
		}
		imdsOwner = p.Name
	}
	reported := make(map[[2]string]bool)
	for _, p := range unique {
		en := envName(p.Name)
		for _, pv := range profileVars {
			v := profileVar(en, pv.suffix)
			other, taken := owner[v]
			if !taken {
				owner[v] = p.Name
				continue
			}
			if pair := [2]string{other, p.Name}; !reported[pair] {
				reported[pair] = true
				ps.add(varProfiles, "profiles %q and %q both read %s; rename one of them", other, p.Name, v)
			}
		}
	}
	for _, p := range unique {
		v := profileVar(envName(p.Name), sfxClientTokenFile)
		if ps.isBad(v) || p.ClientTokenFile == "" {
			continue
		}
		if other, ok := upstreamFiles[p.ClientTokenFile]; ok {
			ps.add(v, "is the upstream token file of profile %q; the daemon would hand that credential to local clients, so use another path", other)
			continue
		}
		if other, ok := clientFiles[p.ClientTokenFile]; ok {
			ps.add(v, "is also profile %q's client token file; give each profile its own, or a client of one could get the other's keys", other)
			continue
		}
		clientFiles[p.ClientTokenFile] = p.Name
	}
}

// checkWorkload applies the rules of a workload-oidc profile: clients
// present their own token, so there is no upstream token file and no
// client token, and the IMDS role (which has no Authorization header) is
// not available.
func checkWorkload(ps *problems, en string, p Profile) {
	v := func(suffix string) string { return profileVar(en, suffix) }
	if p.TokenFile != "" {
		ps.check(v(sfxTokenFile), msgWorkloadTokenFile)
	}
	if p.ClientTokenFile != "" {
		ps.check(v(sfxClientTokenFile), "source workload-oidc has no client token: the client's Authorization header "+
			"is its OIDC token; remove it")
	}
	if p.IMDS {
		ps.check(v(sfxIMDS), "the IMDS role carries no client token, so a workload-oidc profile cannot be served "+
			"there; remove it, or serve an operator profile as the role")
	}
	if len(p.Issuers) == 0 {
		ps.check(v(sfxIssuers), "required for source workload-oidc: list the issuers (iss) whose tokens are accepted, "+
			"e.g. https://oidc.example.com/my-cluster")
	}
	for _, iss := range p.Issuers {
		if msg := checkOIDCURL(iss); msg != "" {
			ps.check(v(sfxIssuers), "issuer "+show(iss)+" "+msg)
			break
		}
	}
	if p.Audience == "" {
		ps.check(v(sfxAudience), "is empty; unset it for "+defaultAudience)
	}
	if !ps.isBad(v(sfxShare)) {
		ps.check(v(sfxShare), checkEnum(p.Share, shares, "share mode"))
	}
	switch {
	case p.JWKSURL == "":
	case p.Share != ShareIdentity:
		ps.check(v(sfxJWKSURL), "only SHARE=identity verifies signatures locally; remove it, or set SHARE=identity")
	default:
		if msg := checkOIDCURL(p.JWKSURL); msg != "" {
			ps.check(v(sfxJWKSURL), msg)
		}
	}
}

// checkNotWorkload reports the workload-oidc settings on a profile of
// another source.
func checkNotWorkload(ps *problems, en string, p Profile) {
	for _, sv := range []struct {
		suffix string
		set    bool
	}{{sfxIssuers, len(p.Issuers) > 0}, {sfxAudience, p.Audience != ""}, {sfxShare, p.Share != ""}, {sfxJWKSURL, p.JWKSURL != ""}} {
		if sv.set {
			ps.check(profileVar(en, sv.suffix), fmt.Sprintf("only source workload-oidc uses it (this profile's is %s); remove it", show(p.Source)))
		}
	}
}

// checkOIDCURL returns what is wrong with an issuer or key set URL, or
// "": https, or http to a loopback host, with a host and no user info,
// query or fragment.
func checkOIDCURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return "is not an absolute URL; write e.g. https://oidc.example.com/cluster"
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "must not hold user info, a query or a fragment"
	case u.Scheme == "https":
		return ""
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
		return ""
	}
	return "must be https (http only with a loopback host such as 127.0.0.1)"
}

// checkS3Endpoint returns what is wrong with CWCREDS_S3_ENDPOINT, or "".
// Like the API URL it is never quoted whole. http is accepted: the check
// signs its request, which carries no secret.
func checkS3Endpoint(s string) string {
	if s == "" {
		return "is required with " + varS3Region + "; set the S3 endpoint clients use, such as https://cwobject.com, or unset both"
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Scheme == "" || u.Opaque != "":
		return "is not an absolute URL; write the scheme and host, such as https://cwobject.com"
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("scheme %s is not supported; use https or http", show(u.Scheme))
	case u.User != nil:
		return "must not contain user info; remove the user@ part"
	case u.Hostname() == "":
		return "has no host; use e.g. https://cwobject.com"
	case u.RawQuery != "" || u.ForceQuery || strings.Contains(s, "#"):
		return "must not have a query or fragment"
	case u.Path != "" && u.Path != "/":
		return "must not have a path: the check lists buckets at the endpoint's root"
	}
	return ""
}

// checkS3Region returns what is wrong with CWCREDS_S3_REGION, or "".
func checkS3Region(region, endpoint string) string {
	switch {
	case endpoint == "":
		return "has no effect without " + varS3Endpoint + "; set both or neither"
	case region == "":
		return "is required with " + varS3Endpoint + "; set the region clients sign for, such as US-EAST-04A"
	case len(region) > 64 || strings.ContainsFunc(region, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}):
		return fmt.Sprintf("%s is not a region name: letters, digits, '-' and '_', at most 64", show(region))
	}
	return ""
}
