package cwapi

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// maxTokenBytes bounds an upstream credential file. Base64 SAML responses
// are the largest (tens of KiB); anything near this is not a credential.
const maxTokenBytes = 1 << 20

// insecureModeBits are the permission bits that refuse an upstream
// credential file: group or others may read it (and so mint keys as its
// identity), or write it (and so substitute an identity of their own, whose
// keys the daemon would then hand to every client).
const insecureModeBits fs.FileMode = 0o066

// ErrInsecureFileMode: an upstream credential file is readable or writable
// by its group or by others, and neither TokenFileRules exception applies
// (the file is not in the systemd credentials directory, and insecure
// modes are not allowed). It wraps ErrBadToken, so errors.Is(err,
// ErrBadToken) holds as for any other unusable token file.
var ErrInsecureFileMode = fmt.Errorf("%w: insecure file mode", ErrBadToken)

// ErrUntrustedOwner: an upstream credential file is owned by a user other
// than the daemon's (effective uid) or root, and it is not in the systemd
// credentials directory. Its owner can rewrite it at will, whatever its
// mode, and so choose the identity whose keys the daemon hands to every
// client. CWCREDS_ALLOW_INSECURE_FILE_MODES does not lift this check: it is
// about modes, and the files it is meant for (Kubernetes Secret and
// projected volumes) are owned by root or the daemon's user anyway. It
// wraps ErrBadToken.
var ErrUntrustedOwner = fmt.Errorf("%w: file owned by another user", ErrBadToken)

// TokenFileRules say which file modes ReadTokenFileWith accepts beyond the
// owner-only ones (0600, 0400), and where files owned by others are
// accepted. The zero value accepts nothing more.
type TokenFileRules struct {
	// AllowInsecureMode accepts any file its group or others can read or
	// write (CWCREDS_ALLOW_INSECURE_FILE_MODES). It does not accept a file
	// owned by another user (ErrUntrustedOwner).
	AllowInsecureMode bool
	// CredentialsDir is systemd's $CREDENTIALS_DIRECTORY (LoadCredential=),
	// or "". A file that really lies inside it is accepted whatever its
	// mode and owner: systemd owns that read-only per-service mount and decides who
	// may read its files (systemd ≥ 254 makes them root-owned 0440 with an
	// ACL entry for the service user, which no chmod can change). "Really"
	// is decided on the opened file, through /proc/self/fd, against the
	// directory with its symlinks resolved: a symlink elsewhere pointing
	// into the directory is trusted, a symlink in the directory pointing
	// out of it is not, and a file whose location cannot be read is not.
	CredentialsDir string
}

// ReadTokenFileWith reads an upstream credential from path, refusing a
// file owned by a user other than the daemon's or root
// (ErrUntrustedOwner), and a file its group or others can read or write
// (ErrInsecureFileMode), unless rules accept it. Minters and revokers read with their MintSpec's
// TokenFileRules at every mint, so a rotated file (a Kubernetes projected
// token, a symlink swap) takes effect at once.
//
// The file must be a regular file; a symlink is followed, and the mode and
// location checked are the target's, taken from the opened file so that a
// swap between check and read cannot slip another file past them. (A
// symlink is expected: Kubernetes volumes publish files through ..data
// links.) One
// trailing line ending is dropped, since editors and `echo` add one; the
// token itself must not contain CR or LF, and an empty file is an error.
// Every error wraps ErrBadToken and names the path, never the file's
// content.
func ReadTokenFileWith(path string, rules TokenFileRules) (string, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer, hanging the mint; it is refused below as not a regular file.
	// Reads of regular files ignore the flag.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: stat %s: %w", ErrBadToken, path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file", ErrBadToken, path)
	}
	// Whether the file lies in the credentials directory is asked at most
	// once, and only when the owner or mode would refuse it.
	inCreds := sync.OnceValue(func() bool { return inCredentialsDir(f, rules.CredentialsDir) })
	if uid, ok := fileOwner(fi); !ok || !trustedOwner(uid) {
		if !inCreds() {
			return "", untrustedOwnerError(path, uid, ok)
		}
	}
	if perm := fi.Mode().Perm(); perm&insecureModeBits != 0 && !rules.AllowInsecureMode && !inCreds() {
		return "", insecureModeError(path, perm, rules.CredentialsDir)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("%w: read %s: %w", ErrBadToken, path, err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("%w: %s is larger than %d bytes", ErrBadToken, path, maxTokenBytes)
	}
	tok := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	switch {
	case strings.TrimSpace(tok) == "":
		return "", fmt.Errorf("%w: %s is empty", ErrBadToken, path)
	case strings.ContainsAny(tok, "\r\n"):
		return "", fmt.Errorf("%w: %s holds more than one line; a token must be a single line", ErrBadToken, path)
	}
	return tok, nil
}

// fileOwner returns the owner uid of fi, an os.File's Stat; ok is false
// where the platform does not say.
func fileOwner(fi fs.FileInfo) (uid uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

// trustedOwner reports whether a file owned by uid may decide which
// identity the daemon uses: its own user, or root (who can do anything on
// the node anyway).
func trustedOwner(uid uint32) bool { return uid == 0 || int64(uid) == int64(os.Geteuid()) }

// untrustedOwnerError explains ErrUntrustedOwner for path and the ways out.
func untrustedOwnerError(path string, uid uint32, known bool) error {
	owner := "an unknown user"
	if known {
		owner = "uid " + strconv.FormatUint(uint64(uid), 10)
		if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil && u.Username != "" {
			owner += " (" + u.Username + ")"
		}
	}
	return fmt.Errorf("%w: %s is owned by %s, not by the daemon's user (uid %d) or root, so its owner can rewrite it "+
		"and choose the identity whose keys every client gets; run chown %d %s (or chown root), or load it with "+
		"systemd LoadCredential= (files in $CREDENTIALS_DIRECTORY are trusted); "+
		"CWCREDS_ALLOW_INSECURE_FILE_MODES does not lift this check",
		ErrUntrustedOwner, path, owner, os.Geteuid(), os.Geteuid(), path)
}

// inCredentialsDir reports whether the opened file f lies inside dir once
// every symlink is resolved. It asks the kernel where f is
// (/proc/self/fd/N names the opened inode's path, so a rename or symlink
// swap after the open cannot change the answer) and compares that with
// dir, resolved, on a path boundary: /x/creds2/f is not inside /x/creds.
// Anything it cannot determine (no /proc, an unresolvable dir, a deleted
// file) is "not inside", so the mode check then applies.
func inCredentialsDir(f *os.File, dir string) bool {
	if dir == "" || !filepath.IsAbs(dir) {
		return false
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil || root == "/" {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var at string
	if cerr := rc.Control(func(fd uintptr) {
		at, err = os.Readlink("/proc/self/fd/" + strconv.FormatUint(uint64(fd), 10))
	}); cerr != nil || err != nil {
		return false
	}
	if !filepath.IsAbs(at) || strings.HasSuffix(at, " (deleted)") {
		return false
	}
	return strings.HasPrefix(at, root+string(filepath.Separator))
}

// insecureModeError explains which access perm grants beyond the owner and
// the ways out.
func insecureModeError(path string, perm fs.FileMode, credDir string) error {
	var can string
	switch read, write := perm&0o044 != 0, perm&0o022 != 0; {
	case read && write:
		can = "read and write it"
	case read:
		can = "read it"
	default:
		can = "write it"
	}
	where := ""
	if credDir != "" && strings.HasPrefix(filepath.Clean(path), filepath.Clean(credDir)+string(filepath.Separator)) {
		// Named inside the directory but not there once resolved.
		where = fmt.Sprintf(" (it is not trusted as a systemd credential: it resolves outside $CREDENTIALS_DIRECTORY %s)", credDir)
	}
	return fmt.Errorf("%w: %s has mode %04o, so users other than its owner can %s%s; "+
		"run chmod 600 %s (or 0400) as its owner, or load it with systemd LoadCredential= "+
		"(files in $CREDENTIALS_DIRECTORY are trusted whatever their mode), "+
		"or set CWCREDS_ALLOW_INSECURE_FILE_MODES=true if that access is intended",
		ErrInsecureFileMode, path, uint32(perm), can, where, path)
}
