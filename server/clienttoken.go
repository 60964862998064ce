package server

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
// An existing file is used as is: it must be non-empty, at most 4 KiB, and
// hold only printable ASCII with no leading or trailing blank (in particular
// no CR or LF: the AWS SDKs refuse such a token). The error names the path but
// never includes the content.
//
// A missing file is created with 32 bytes from random, hex-encoded (64
// characters, no trailing newline) with the given mode (0640 lets the
// group that client users join read it; 0600 keeps it to the daemon), creating its directory (0750)
// if needed. The token is written to a temporary file in the same directory
// and then linked into place, so readers never see a partial file and a file
// created concurrently by another process is never replaced (its token is
// returned instead). created reports whether this call wrote the file.
func LoadClientToken(path string, random io.Reader, mode fs.FileMode) (token string, created bool, err error) {
	if path == "" {
		return "", false, errors.New("no client token file path")
	}
	token, err = readClientToken(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return token, false, err
	}
	return createClientToken(path, random, mode)
}

func readClientToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err // fs.ErrNotExist is how LoadClientToken learns to create it
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxClientTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read client token file %s: %w", path, err)
	}
	if err := checkClientToken(b); err != nil {
		return "", fmt.Errorf("client token file %s: %w", path, err)
	}
	return string(b), nil
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

func createClientToken(path string, random io.Reader, mode fs.FileMode) (string, bool, error) {
	raw := make([]byte, clientTokenRandomBytes)
	if _, err := io.ReadFull(random, raw); err != nil {
		return "", false, fmt.Errorf("generate client token for %s: %w", path, err)
	}
	token := hex.EncodeToString(raw)

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", false, fmt.Errorf("create client token directory: %w", err)
	}
	tmp, err := writeTempFile(dir, filepath.Base(path), token, mode)
	if err != nil {
		return "", false, fmt.Errorf("create client token file %s: %w", path, err)
	}
	defer os.Remove(tmp)

	// Link rather than rename: it fails if another process created the
	// file meanwhile, and then that token wins. Fall back to rename on
	// filesystems without hard links.
	switch err := os.Link(tmp, path); {
	case errors.Is(err, fs.ErrExist):
		tok, err := readClientToken(path)
		return tok, false, err
	case err != nil:
		if err := os.Rename(tmp, path); err != nil {
			return "", false, fmt.Errorf("create client token file %s: %w", path, err)
		}
	}
	syncDir(dir)
	return token, true, nil
}

// writeTempFile writes content to a new file with mode in dir and returns its
// name.
func writeTempFile(dir, base, content string, mode fs.FileMode) (name string, err error) {
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return "", err
	}
	if _, err := f.WriteString(content); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}

// syncDir makes a new directory entry durable. Best effort: the file is
// already complete, and a lost entry only means a new token next start.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// tokenMatches reports whether the presented Authorization value equals the
// profile's client token, in time independent of where they differ. An
// empty configured token matches nothing.
//
// subtle.ConstantTimeCompare returns at once when the lengths differ, so it
// can reveal the token's length, which is public anyway for generated tokens
// (64 hex characters); the content stays protected.
func tokenMatches(presented, want string) bool {
	if want == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(presented), []byte(want)) == 1
}
