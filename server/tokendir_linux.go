package server

import (
	"errors"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames from to to, both in dirfd, failing with EEXIST
// when to exists. Filesystems without RENAME_NOREPLACE fall back to
// link(2), which fails the same way, then unlink.
func renameNoReplace(dirfd int, from, to string) error {
	err := unix.Renameat2(dirfd, from, dirfd, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return linkThenUnlink(dirfd, from, to)
	}
	return err
}
