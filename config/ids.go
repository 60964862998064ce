package config

import (
	"fmt"
	"os/user"
	"strconv"
)

// maxID is the largest uid or gid accepted: (uid_t)-1 means "no id" to the
// kernel and is never a process's uid.
const maxID = 1<<32 - 2

// lookupUser and lookupGroup resolve a user or group name to its id. Tests
// replace them.
var (
	lookupUser = func(name string) (string, error) {
		u, err := user.Lookup(name)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	}
	lookupGroup = func(name string) (string, error) {
		g, err := user.LookupGroup(name)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	}
)

// parseIDs parses an ALLOWED_UIDS or ALLOWED_GIDS list: numbers, or names
// resolved with lookup. Every bad item is reported; duplicates are dropped.
func parseIDs(ps *problems, v, list string, lookup func(string) (string, error)) []uint32 {
	items := splitList(list)
	if len(items) == 0 {
		return nil
	}
	out := make([]uint32, 0, len(items))
	seen := make(map[uint32]bool, len(items))
	for _, item := range items {
		id, msg := parseID(item, lookup)
		if msg != "" {
			ps.add(v, "%s", msg)
			continue
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// parseID parses one item: all digits is an id, anything else a name.
func parseID(item string, lookup func(string) (string, error)) (uint32, string) {
	if isDigits(item) {
		n, err := strconv.ParseUint(item, 10, 32)
		if err != nil || n > maxID {
			return 0, fmt.Sprintf("%s is out of range; ids go from 0 to %d", show(item), uint64(maxID))
		}
		return uint32(n), ""
	}
	s, err := lookup(item)
	if err != nil {
		return 0, fmt.Sprintf("%s cannot be resolved (%v); use a name known on this host (getent) or the number", show(item), err)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > maxID {
		return 0, fmt.Sprintf("%s resolves to %s, which is not a numeric id; use the number", show(item), show(s))
	}
	return uint32(n), ""
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// checkIDList reports an id Validate cannot accept.
func checkIDList(ps *problems, v string, ids []uint32) {
	for _, id := range ids {
		if id > maxID {
			ps.add(v, "%d is not a valid id; ids go from 0 to %d", id, uint64(maxID))
			return
		}
	}
}
