package config

import "slices"

// RestartOnly returns the names of the variables whose values differ
// between the running configuration old and the reloaded one next but that
// a reload cannot apply, in documentation order: the daemon-wide settings
// bound at start (listen address, API URL, logging, the loopback override,
// runtime directory, node name, file mode rule, key warm-up, env file), and
// CWCREDS_PROFILE_<NAME>_IMDS of every profile whose IMDS setting changed,
// including a profile added or removed with IMDS=true. Vars marks the same
// variables NeedsRestart. An empty result means a reload can apply next in
// full: profiles, their key-deciding settings (see Profile.Fingerprint),
// client token files and allowed users and groups.
func RestartOnly(old, next *Config) []string {
	var out []string
	for _, g := range globalVars {
		if g.restart != nil && g.restart(old, next) {
			out = append(out, g.name)
		}
	}
	// Profiles in old's order, then those only next has. A profile missing
	// from one side compares as the zero Profile.
	var names []string
	for _, p := range old.Profiles {
		names = append(names, p.Name)
	}
	for _, p := range next.Profiles {
		if !slices.Contains(names, p.Name) {
			names = append(names, p.Name)
		}
	}
	for _, name := range names {
		o, _ := old.Profile(name)
		n, _ := next.Profile(name)
		for _, pv := range profileVars {
			if pv.restart != nil && pv.restart(o, n) {
				out = append(out, profileVar(envName(name), pv.suffix))
			}
		}
	}
	return out
}
