package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// maxSuggestDistance is the largest edit distance at which an unknown
// variable name gets a "did you mean" suggestion.
const maxSuggestDistance = 3

// checkUnknown reports every CWCREDS_* variable in environ that nothing
// reads. listed holds the infixes of every name in CWCREDS_PROFILES, valid
// or not (an invalid name is reported already; its variables are not
// reported again). A variable that is known but not read for its profile's
// source (ORG_ID for access-key, say) is loadProfile's to report.
//
// The prefix is matched regardless of case, since cwcreds_profiles=... is a
// mistake envconfig would silently ignore.
func checkUnknown(ps *problems, environ, listed []string) {
	known := knownNames(listed)
	isKnown := make(map[string]bool, len(known))
	for _, k := range known {
		isKnown[k] = true
	}
	reported := make(map[string]bool)
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if !strings.HasPrefix(upper, envPrefix+"_") || isKnown[name] || reported[name] {
			continue
		}
		reported[name] = true
		ps.add(name, "%s", unknownMsg(upper, known, listed))
	}
}

// knownNames lists every variable config reads for the listed profiles, in
// documentation order.
func knownNames(listed []string) []string {
	known := make([]string, 0, len(globalVars)+len(listed)*len(profileVars))
	for _, g := range globalVars {
		known = append(known, g.name)
	}
	for _, en := range listed {
		for _, pv := range profileVars {
			known = append(known, profileVar(en, pv.suffix))
		}
	}
	return known
}

// unknownMsg explains why the variable upper (upper-cased) is not read.
func unknownMsg(upper string, known, listed []string) string {
	guess := suggest(upper, known)
	if guess == upper {
		return "variable names are case-sensitive; did you mean " + guess + "?"
	}
	hint := ""
	if guess != "" {
		hint = "; did you mean " + guess + "?"
	}
	if strings.HasPrefix(upper, profileVarPrefix) {
		if j, _, ok := ownerOf(upper, listed); ok {
			if hint == "" {
				hint = "; a profile's settings are " + settingsList()
			}
			return fmt.Sprintf("not a setting of profile %s%s", show(profileName(listed[j])), hint)
		}
		if en, ok := unlistedInfix(upper); ok {
			if hint != "" {
				hint = " (" + strings.TrimPrefix(hint, "; ") + ")"
			}
			return fmt.Sprintf("profile %s is not in %s; add it there, or remove this variable%s",
				show(profileName(en)), varProfiles, hint)
		}
	}
	if hint == "" {
		return "not a cwcreds variable; remove it or fix its name (`cwcreds help` lists them)"
	}
	return "not a cwcreds variable" + hint
}

// unlistedInfix returns the profile infix of a per-profile variable name
// with a known setting suffix, preferring the longest suffix
// (CWCREDS_PROFILE_X_CLIENT_TOKEN_FILE is profile X's CLIENT_TOKEN_FILE).
func unlistedInfix(upper string) (string, bool) {
	rest := strings.TrimPrefix(upper, profileVarPrefix)
	suffixes := make([]string, len(profileVars))
	for i, pv := range profileVars {
		suffixes[i] = pv.suffix
	}
	slices.SortStableFunc(suffixes, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, s := range suffixes {
		if en, ok := strings.CutSuffix(rest, "_"+s); ok && en != "" {
			return en, true
		}
	}
	return "", false
}

// profileName maps a variable infix back to the profile name it stands for.
func profileName(envName string) string {
	return strings.ToLower(strings.ReplaceAll(envName, "_", "-"))
}

// settingsList names the per-profile settings, for messages.
func settingsList() string {
	s := make([]string, len(profileVars))
	for i, pv := range profileVars {
		s[i] = pv.suffix
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// suggest returns the known name closest to name by edit distance, if it
// is within maxSuggestDistance; ties go to the earlier name.
func suggest(name string, known []string) string {
	best, bestDist := "", maxSuggestDistance+1
	for _, k := range known {
		if !plainName(k) {
			continue // from an invalid profile name: never echo it back
		}
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// plainName reports whether name is made only of the characters a
// cwcreds variable name may hold, so a suggestion can be shown as is.
func plainName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// editDistance is the Levenshtein distance between a and b, in bytes
// (variable names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
