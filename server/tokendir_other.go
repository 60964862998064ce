//go:build !linux

package server

// renameNoReplace renames from to to, both in dirfd, failing with EEXIST
// when to exists (link(2), then unlink).
func renameNoReplace(dirfd int, from, to string) error { return linkThenUnlink(dirfd, from, to) }
