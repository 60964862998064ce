package broker

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrUnknownProfile: the profile is not configured.
	ErrUnknownProfile = errors.New("unknown profile")
	// ErrNoValidKey: the profile holds no key that may be served now. The
	// concrete error is an *UnavailableError carrying the reason.
	ErrNoValidKey = errors.New("no valid key")
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
	// Workload: the key is a workload identity's (GetFor), so Err, when
	// upstream refused the request, refused the caller's own token.
	Workload bool
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

// rejectionHint says in plain words what it means when upstream refuses
// the profile's own credential (401, 403), and what a person must do;
// otherwise "". Retrying cannot fix these.
func rejectionHint(err error) string {
	var api *cwapi.APIError
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
