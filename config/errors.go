package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one thing wrong with the configuration.
type Problem struct {
	// Var is the exact name of the environment variable at fault, such as
	// CWCREDS_PROFILE_TRAIN_SOURCE.
	Var string
	// Msg says what is wrong and how to fix it. It never contains a value
	// that could be a secret: it quotes only profile names, sources,
	// durations and addresses.
	Msg string
}

// String renders p as "VAR: msg".
func (p Problem) String() string { return p.Var + ": " + p.Msg }

// Error is the error Load and Validate return for an invalid
// configuration. It lists every problem found, not just the first: global
// variables first, then each profile's in CWCREDS_PROFILES order.
type Error struct {
	Problems []Problem
}

// Error renders one problem per line, as "CWCREDS_X: <msg>".
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems collects Problems. A variable marked bad has been reported
// already, so later checks that depend on its value skip it rather than
// report a consequence of the same mistake.
type problems struct {
	list []Problem
	bad  map[string]bool
	// written holds, for Load, each decoded variable's value as written,
	// for messages (see shown).
	written map[string]string
}

// check reports msg for v unless msg is "" or v is bad already.
func (ps *problems) check(v, msg string) {
	if msg != "" && !ps.isBad(v) {
		ps.add(v, "%s", msg)
	}
}

// record keeps v's value as written, when it is set, for shown.
func (ps *problems) record(v, value string) {
	if value == "" {
		return
	}
	if ps.written == nil {
		ps.written = make(map[string]string)
	}
	ps.written[v] = value
}

// shown is how a message spells v's value: as written (quoted) when
// decoding recorded it, else fallback.
func (ps *problems) shown(v, fallback string) string {
	if w, ok := ps.written[v]; ok {
		return show(w)
	}
	return fallback
}

func (ps *problems) add(v, format string, args ...any) {
	ps.list = append(ps.list, Problem{Var: v, Msg: fmt.Sprintf(format, args...)})
	ps.markBad(v)
}

// markBad records that v's value is unusable without reporting it, when a
// problem reported elsewhere explains why.
func (ps *problems) markBad(v string) {
	if ps.bad == nil {
		ps.bad = make(map[string]bool)
	}
	ps.bad[v] = true
}

func (ps *problems) isBad(v string) bool { return ps.bad[v] }

// isSet reports whether decoding recorded a value written for v.
func (ps *problems) isSet(v string) bool {
	_, ok := ps.written[v]
	return ok
}

// err sorts the problems into report order and returns them as an *Error,
// or nil when there are none. envNames are the per-profile infixes in
// CWCREDS_PROFILES order.
func (ps *problems) err(envNames []string) error {
	if len(ps.list) == 0 {
		return nil
	}
	type keyed struct {
		group, rank int
		p           Problem
	}
	ks := make([]keyed, len(ps.list))
	for i, p := range ps.list {
		g, r := sortKey(p.Var, envNames)
		ks[i] = keyed{g, r, p}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.rank, b.rank), strings.Compare(a.p.Var, b.p.Var))
	})
	out := make([]Problem, len(ks))
	for i, k := range ks {
		out[i] = k.p
	}
	return &Error{Problems: out}
}

// sortKey orders problems: global variables in documentation order (group
// 0), then each listed profile's variables in documentation order (group
// 1+i), then variables of profiles that are not listed. Unknown names sort
// after the known ones of their group, by name. Problems about the same
// variable keep the order they were found in.
func sortKey(name string, envNames []string) (group, rank int) {
	for i, g := range globalVars {
		if name == g.name {
			return 0, i
		}
	}
	switch name {
	case envRuntimeDirectory, envXDGRuntimeDir:
		return 0, slices.IndexFunc(globalVars, func(g globalVar) bool { return g.name == varRuntimeDir })
	case envCredentialsDirectory:
		return 0, len(globalVars)
	}
	if j, suffix, ok := ownerOf(name, envNames); ok {
		return 1 + j, suffixRank(suffix)
	}
	if strings.HasPrefix(strings.ToUpper(name), profileVarPrefix) {
		return 1 + len(envNames), 0
	}
	return 0, len(globalVars) + 1
}

// ownerOf finds the listed profile whose variable prefix name starts with,
// preferring the longest infix, and returns its index and the rest of the
// name.
func ownerOf(name string, envNames []string) (index int, suffix string, ok bool) {
	best := -1
	for j, en := range envNames {
		p := profileVarPrefix + en + "_"
		if strings.HasPrefix(name, p) && len(name) > len(p) && (best < 0 || len(en) > len(envNames[best])) {
			best = j
		}
	}
	if best < 0 {
		return 0, "", false
	}
	return best, name[len(profileVarPrefix+envNames[best]+"_"):], true
}

func suffixRank(suffix string) int {
	for i, pv := range profileVars {
		if pv.suffix == suffix {
			return i
		}
	}
	return len(profileVars)
}
