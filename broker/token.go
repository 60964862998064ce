package broker

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// maxTokenBytes bounds an upstream credential file. Base64 SAML responses
// are the largest (tens of KiB); anything near this is not a credential.
const maxTokenBytes = 1 << 20

// ReadTokenFile reads an upstream credential (API access token, OIDC JWT or
// base64 SAML response) from path. It is called at every mint, so a rotated
// file (a Kubernetes projected token, a symlink swap) takes effect at once.
//
// One trailing line ending is dropped, since editors and `echo` add one; the
// token itself must not contain CR or LF, and an empty file is an error. The
// error names the path but never includes the file's content.
func ReadTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	defer f.Close()
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
