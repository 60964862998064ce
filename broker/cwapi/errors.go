package cwapi

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrBadToken: the upstream credential file is missing, empty or malformed.
	ErrBadToken = errors.New("bad upstream token")
	// ErrBadReply: upstream answered 2xx with a body that is not a usable key.
	ErrBadReply = errors.New("malformed upstream reply")
)

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
		return fmt.Sprintf("%s: HTTP %d (%s): %s", e.Endpoint, e.StatusCode, e.CodeName(), msg)
	}
	return fmt.Sprintf("%s: HTTP %d: %s", e.Endpoint, e.StatusCode, msg)
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

// CodeName is the name of the body's gRPC status code, e.g.
// "UNAUTHENTICATED", or "code N" for a code outside the known set; "" when
// the body gave none.
func (e *APIError) CodeName() string {
	switch {
	case e.Code == 0:
		return ""
	case e.Code > 0 && e.Code < len(grpcCodeNames):
		return grpcCodeNames[e.Code]
	}
	return fmt.Sprintf("code %d", e.Code)
}
