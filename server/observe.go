package server

import "net/http"

// Outcome is how a credential request ended, for metrics and the audit log.
type Outcome uint8

// The outcomes of a credential request.
const (
	OutcomeOK             Outcome = iota // a key was served
	OutcomeUnauthorized                  // missing or wrong client token (401)
	OutcomeUnknownProfile                // no such profile (404)
	OutcomeNoValidKey                    // the profile holds no servable key (503)
	OutcomeError                         // anything else (500)
	OutcomeForbidden                     // the peer's user may not use the profile (403)
	NumOutcomes                          // the number of outcomes, not one
)

var outcomeNames = [NumOutcomes]string{"ok", "unauthorized", "unknown_profile", "no_valid_key", "error", "forbidden"}

// String returns the outcome's label value: ok, unauthorized,
// unknown_profile, no_valid_key, error or forbidden.
func (o Outcome) String() string {
	if o < NumOutcomes {
		return outcomeNames[o]
	}
	return "invalid"
}

// outcomeOf maps an error code sent to the client to an Outcome.
func outcomeOf(code string) Outcome {
	switch code {
	case codeUnauthorized:
		return OutcomeUnauthorized
	case codeUnknownProfile:
		return OutcomeUnknownProfile
	case codeNoValidKey:
		return OutcomeNoValidKey
	case codeForbidden:
		return OutcomeForbidden
	default:
		return OutcomeError
	}
}

// RequestMetrics counts credential requests. New calls Requests once with
// "" for requests naming no configured profile, and New and
// Server.SetProfiles call it for each profile they add or change (so
// possibly several times for one name: each call must count into the same
// series), and keep the results, so counting a request is one call on a
// value resolved in advance. Implementations must be safe for concurrent
// use.
type RequestMetrics interface {
	Requests(profile string) RequestCounter
}

// RequestCounter counts one profile's credential requests by outcome.
type RequestCounter interface {
	Count(Outcome)
}

type nopRequests struct{}

func (nopRequests) Requests(string) RequestCounter { return nopRequests{} }
func (nopRequests) Count(Outcome)                  {}

// PeerIdentity reports the operating-system identity of the process that
// sent r (for a local connection), for the audit log. ok is false when it
// is not known; pid is 0 when only the uid is.
type PeerIdentity func(r *http.Request) (uid, pid int, ok bool)

// KeySuffix returns the last four characters of an access key id: enough to
// tell keys apart in a log or a status table, not the whole id. It is all
// of a key id the daemon and its commands ever show.
func KeySuffix(id string) string {
	if len(id) <= 4 {
		return id
	}
	return id[len(id)-4:]
}
