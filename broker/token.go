package broker

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
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
// by its group or by others, and insecure modes are not allowed (see
// Profile.AllowInsecureFileMode). It wraps ErrBadToken, so
// errors.Is(err, ErrBadToken) holds as for any other unusable token file.
var ErrInsecureFileMode = fmt.Errorf("%w: insecure file mode", ErrBadToken)

// ReadTokenFile reads an upstream credential (API access token, OIDC JWT or
// base64 SAML response) from path, refusing a file its group or others can
// read or write (ErrInsecureFileMode). It is called at every mint, so a
// rotated file (a Kubernetes projected token, a symlink swap) takes effect
// at once.
//
// The file must be a regular file; a symlink is followed, and the mode
// checked is the target's, taken from the opened file so that a swap
// between check and read cannot slip another file past it. One trailing
// line ending is dropped, since editors and `echo` add one; the token
// itself must not contain CR or LF, and an empty file is an error. Every
// error wraps ErrBadToken and names the path, never the file's content.
func ReadTokenFile(path string) (string, error) { return ReadTokenFileMode(path, false) }

// ReadTokenFileMode is ReadTokenFile with the file mode rule made
// explicit: allowInsecureMode (CWCREDS_ALLOW_INSECURE_FILE_MODES) accepts a
// file its group or others can read or write. Minters and revokers read
// with their Profile's AllowInsecureFileMode.
func ReadTokenFileMode(path string, allowInsecureMode bool) (string, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer, hanging the mint; it is refused below as not a regular file.
	// Reads of regular files ignore the flag.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: stat %s: %v", ErrBadToken, path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file", ErrBadToken, path)
	}
	if perm := fi.Mode().Perm(); perm&insecureModeBits != 0 && !allowInsecureMode {
		return "", insecureModeError(path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("%w: read %s: %v", ErrBadToken, path, err)
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

// insecureModeError explains which access perm grants beyond the owner and
// the two ways out.
func insecureModeError(path string, perm fs.FileMode) error {
	var can string
	switch read, write := perm&0o044 != 0, perm&0o022 != 0; {
	case read && write:
		can = "read and write it"
	case read:
		can = "read it"
	default:
		can = "write it"
	}
	return fmt.Errorf("%w: %s has mode %04o, so users other than its owner can %s; "+
		"run chmod 600 %s (or 0400), or set CWCREDS_ALLOW_INSECURE_FILE_MODES=true if that access is intended",
		ErrInsecureFileMode, path, uint32(perm), can, path)
}
