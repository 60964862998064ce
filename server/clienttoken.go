package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
)

const (
	// maxClientTokenBytes bounds a client token file; a generated token is
	// 64 bytes.
	maxClientTokenBytes = 4 << 10
	// clientTokenRandomBytes is the entropy of a generated token.
	clientTokenRandomBytes = 32
)

// LoadClientToken returns the client token stored at path, creating the file
// when it does not exist.
//
// The file's directory is created (0750) if needed, then opened and
// checked as a TokenDir: owned by the daemon's effective uid or root, and
// writable by no one else; otherwise ErrUnsafePath, since anyone who can
// write it can plant the token file. The file itself is opened without
// following a symlink and without blocking, and must be a regular file with
// one link, owned by the daemon's user and writable by no one else
// (ErrUnsafePath otherwise: a plant is refused, not replaced).
//
// An existing file is used as is: it must be non-empty, at most 4 KiB, and
// hold only printable ASCII with no leading or trailing blank (in particular
// no CR or LF: the AWS SDKs refuse such a token). The error names the path but
// never includes the content.
//
// A missing file is created with 32 bytes from random, hex-encoded (64
// characters, no trailing newline) with the given mode (0640 lets the
// group that client users join read it; 0600 keeps it to the daemon). The
// token is written to a new randomly named file in the checked directory
// and moved into place only if the name is still free, so readers never see
// a partial file and a file created concurrently by another process is
// never replaced (its token is returned instead). created reports whether
// this call wrote the file.
func LoadClientToken(path string, random io.Reader, mode fs.FileMode) (token string, created bool, err error) {
	if path == "" {
		return "", false, errors.New("no client token file path")
	}
	d, err := OpenTokenDir(filepath.Dir(path), true)
	if err != nil {
		return "", false, err
	}
	defer d.Close()
	return d.LoadToken(filepath.Base(path), random, mode)
}

// checkClientToken rejects what cannot be sent back verbatim as an
// Authorization header. Its errors never quote the token.
func checkClientToken(b []byte) error {
	switch {
	case len(b) == 0:
		return errors.New("file is empty")
	case len(b) > maxClientTokenBytes:
		return fmt.Errorf("file is larger than %d bytes", maxClientTokenBytes)
	case b[0] == ' ' || b[0] == '\t' || b[len(b)-1] == ' ' || b[len(b)-1] == '\t':
		return errors.New("token has leading or trailing blanks, which HTTP strips from headers")
	}
	for _, c := range b {
		switch {
		case c == '\r' || c == '\n':
			return errors.New("token contains CR or LF (a trailing newline?); AWS SDKs refuse such tokens: write it without one")
		case c < ' ' && c != '\t' || c > '~':
			return errors.New("token contains a control or non-ASCII byte")
		}
	}
	return nil
}
