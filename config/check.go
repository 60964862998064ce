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

// checkListenAddr returns what is wrong with a listen address, or "".
func checkListenAddr(addr string, allowNonLoopback bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%s is not host:port; use e.g. %s", show(addr), defaultListenAddr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("port %s is not a number from 0 to 65535; use e.g. %s", show(port), defaultListenAddr)
	}
	loopback := false
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
		loopback = ip.Unmap().IsLoopback()
	}
	if !loopback && !allowNonLoopback {
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
	needOrg := source == sourceOIDC || source == sourceSAML
	needConfig := source == sourceSAML
	switch {
	case needOrg && !orgSet:
		ps.add(profileVar(envName, sfxOrgID), "required for source %q: set the CoreWeave organization ID the identity belongs to", source)
	case !needOrg && orgSet:
		ps.add(profileVar(envName, sfxOrgID), "source %q does not use an organization ID (only oidc and saml do); remove it", source)
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
