package broker

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrUnknownProfile: the profile is not configured.
	ErrUnknownProfile = errors.New("unknown profile")
	// ErrNoValidKey: the profile holds no key that may be served now. The
	// concrete error is an *UnavailableError carrying the reason.
	ErrNoValidKey = errors.New("no valid key")
	// ErrBadToken: the upstream credential file is missing, empty or malformed.
	ErrBadToken = errors.New("bad upstream token")
	// ErrBadReply: upstream answered 2xx with a body that is not a usable key.
	ErrBadReply = errors.New("malformed upstream reply")
)

// UnavailableError reports why a profile has no key to serve. Its message is
// safe to show to clients: it names the failure's class with a fixed phrase
// (see publicReason), never Err's text, which may hold upstream's words.
type UnavailableError struct {
	Profile string
	// Err is the last minting failure, if any.
	Err error
	// RetryAt is when the broker will next try upstream; zero if unknown.
	RetryAt time.Time
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "profile %q has no valid key", e.Profile)
	if e.Err != nil {
		phrase, _, _ := publicReason(e.Err)
		fmt.Fprintf(&b, ": %s", phrase)
	}
	if !e.RetryAt.IsZero() {
		fmt.Fprintf(&b, " (next upstream attempt at %s)", e.RetryAt.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNoValidKey) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrNoValidKey }

func (e *UnavailableError) Unwrap() error { return e.Err }

// APIError is a non-2xx reply from the CoreWeave API. The message comes from
// the reply's {code, message, details} body, with any token the request
// carried removed.
type APIError struct {
	// Endpoint is the API path called, e.g. "/v1/cwobject/access-key".
	Endpoint string
	// StatusCode is the HTTP status.
	StatusCode int
	// Code is the numeric gRPC status code from the body (0 if absent).
	Code int
	// Message is the human-readable message from the body, if any.
	Message string
	// RetryAfter is the parsed Retry-After header (0 if absent).
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.Code != 0 {
		return fmt.Sprintf("%s: HTTP %d (%s): %s", e.Endpoint, e.StatusCode, grpcCodeName(e.Code), msg)
	}
	return fmt.Sprintf("%s: HTTP %d: %s", e.Endpoint, e.StatusCode, msg)
}

// rejectionHint says in plain words what it means when upstream refuses
// the profile's own credential (401, 403), and what a person must do;
// otherwise "". Retrying cannot fix these.
func rejectionHint(err error) string {
	var api *APIError
	if !errors.As(err, &api) {
		return ""
	}
	switch api.StatusCode {
	case http.StatusUnauthorized:
		return "upstream rejected the profile's credential (revoked, expired or wrong); replace its token file"
	case http.StatusForbidden:
		return "upstream refused the profile's credential permission to mint keys; grant it or use another token"
	}
	return ""
}

// Temporary reports whether retrying later may succeed: 429, 5xx and 408.
func (e *APIError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusRequestTimeout || e.StatusCode >= 500
}

// Unauthorized reports whether upstream refused the credential itself
// (401 or 403): retrying soon with the same token will not help.
func (e *APIError) Unauthorized() bool {
	return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
}

var grpcCodeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

func grpcCodeName(code int) string {
	if code >= 0 && code < len(grpcCodeNames) {
		return grpcCodeNames[code]
	}
	return fmt.Sprintf("code %d", code)
}
