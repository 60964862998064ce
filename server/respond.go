package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/idtoken"
)

// Error codes sent in error bodies. They are part of the wire contract.
const (
	codeUnauthorized     = "Unauthorized"
	codeForbidden        = "Forbidden"
	codeUnknownProfile   = "UnknownProfile"
	codeNotFound         = "NotFound"
	codeMethodNotAllowed = "MethodNotAllowed"
	codeNoValidKey       = "NoValidKey"
	codeInternal         = "InternalError"
	// codeTooManyConnections: the connection limiter refused a connection
	// (see LimitConnections); it is written before any request is read.
	codeTooManyConnections = "TooManyConnections"
	// Codes of the admin revoke endpoint.
	codeBadRevokeRequest    = "BadRequest"
	codeNoKey               = "NoKey"
	codeRevokeTokenRequired = "RevokeTokenRequired"
	codeUpstream            = "UpstreamError"
	codeBadUpstreamToken    = "BadUpstreamToken"
	// Codes of workload profiles (source workload-oidc).
	codeInvalidToken  = "InvalidToken"  // refused locally: malformed, wrong issuer or audience, expired, bad signature
	codeTokenRejected = "TokenRejected" // CoreWeave refused the token at the mint
	codeIssuerKeys    = "IssuerKeysUnavailable"
	// codeTooManyPendingTokens: the peer has too many new tokens without
	// a key (broker.ErrTooManyPendingTokens); refused with no upstream call.
	codeTooManyPendingTokens = "TooManyPendingTokens"
)

// requestError is a refusal decided by the server itself. Its message is
// fixed text, safe to send to the client.
type requestError struct {
	status int
	code   string
	msg    string
}

func (e *requestError) Error() string { return e.msg }

// The server's own refusals.
var (
	errUnauthorized = &requestError{http.StatusUnauthorized, codeUnauthorized,
		"missing or invalid Authorization header for this profile"}
	errForbiddenHost = &requestError{http.StatusForbidden, codeForbidden,
		"Host must name the address the connection was made to: on loopback a loopback address or localhost, " +
			"on a pod identity address that address"}
	errForbiddenProxy = &requestError{http.StatusForbidden, codeForbidden,
		"requests relayed by a proxy (X-Forwarded-For, Forwarded or Via) are refused; connect directly (NO_PROXY=127.0.0.1)"}
	errForbiddenBrowser = &requestError{http.StatusForbidden, codeForbidden,
		"requests from a web browser (Origin or Sec-Fetch-* headers) are refused; use an AWS SDK, curl or cwcreds"}
	errNoWorkloadToken = &requestError{http.StatusUnauthorized, codeUnauthorized,
		"this profile takes the workload's own OIDC token as the Authorization header " +
			"(AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE pointing at a projected service account token)"}
	errNotFound         = &requestError{http.StatusNotFound, codeNotFound, "no such endpoint"}
	errMethodNotAllowed = &requestError{http.StatusMethodNotAllowed, codeMethodNotAllowed, "method not allowed"}
	// errPanic stands for a recovered panic, whose value is never shown.
	errPanic = errors.New("handler panicked")
)

// Client-facing messages for errors whose own text is not shown.
const (
	msgGaveUp   = "gave up waiting for a key; retry later"
	msgInternal = "internal error"
)

// errorStatus maps err to the HTTP status, error code and client-safe
// message sent for it. It is the only place errors become HTTP statuses.
func errorStatus(err error) (status int, code, msg string) {
	var re *requestError
	var ue *broker.UnavailableError
	var te *idtoken.Error
	switch {
	case errors.As(err, &re):
		return re.status, re.code, re.msg
	case errors.As(err, &te) && te.Reason == idtoken.ReasonKeys:
		// Not the caller's fault: the issuer's keys could not be fetched.
		return http.StatusServiceUnavailable, codeIssuerKeys, te.Error()
	case errors.As(err, &te):
		// Its text names the reason and public claims, never the token.
		return http.StatusUnauthorized, codeInvalidToken, te.Error()
	case errors.Is(err, broker.ErrTokenExpired):
		return http.StatusUnauthorized, codeInvalidToken, broker.ErrTokenExpired.Error()
	case errors.Is(err, broker.ErrTooManyPendingTokens):
		return http.StatusTooManyRequests, codeTooManyPendingTokens, broker.ErrTooManyPendingTokens.Error()
	case errors.As(err, &ue) && rejectedToken(ue):
		return http.StatusForbidden, codeTokenRejected, ue.Error()
	case errors.Is(err, broker.ErrUnknownProfile):
		// The text is the sentinel plus the quoted profile name.
		return http.StatusNotFound, codeUnknownProfile, err.Error()
	case errors.As(err, &ue):
		// Client-safe by contract (see broker.UnavailableError).
		return http.StatusServiceUnavailable, codeNoValidKey, ue.Error()
	case errors.Is(err, broker.ErrNoValidKey):
		return http.StatusServiceUnavailable, codeNoValidKey, broker.ErrNoValidKey.Error()
	// The revoke endpoint's failures; their texts hold no secret (upstream
	// messages have the request's token scrubbed, token file errors name
	// the path only), and only an admin sees them.
	case errors.Is(err, broker.ErrNothingToRevoke):
		return http.StatusConflict, codeNoKey, err.Error()
	case errors.Is(err, cwapi.ErrRevokeTokenRequired):
		return http.StatusBadRequest, codeRevokeTokenRequired, err.Error()
	case errors.As(err, new(*cwapi.APIError)):
		return http.StatusBadGateway, codeUpstream, err.Error()
	case errors.Is(err, cwapi.ErrBadToken):
		return http.StatusInternalServerError, codeBadUpstreamToken, err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client went away or a deadline passed while a mint was in
		// flight: to a client that is still there, no key is available yet.
		return http.StatusServiceUnavailable, codeNoValidKey, msgGaveUp
	default:
		return http.StatusInternalServerError, codeInternal, msgInternal
	}
}

// rejectedToken reports whether ue is a workload identity that CoreWeave
// refused (a 4xx other than 429 at the mint): its caller's token will keep
// failing, so it is told so (403) rather than asked to retry (503).
func rejectedToken(ue *broker.UnavailableError) bool {
	var api *cwapi.APIError
	return ue.Workload && errors.As(ue.Err, &api) && !api.Temporary()
}

// errorBody is the JSON error shape: lower-case members for the Go SDKs and
// capitalised ones for the JavaScript SDK.
type errorBody struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	CodeCap    string `json:"Code"`
	MessageCap string `json:"Message"`
}

// writeError logs err and sends it as a JSON error.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := errorStatus(err)
	s.logError(r, err, status, msg)
	s.sendError(w, r, status, code, msg)
}

// logError logs a refused or failed request: 5xx with the error (at debug
// when the client already went away), 403 at warn, other 4xx at debug.
// 401s are logged by the handler, which knows the profile. Lines above
// debug are bounded by s.lines (anyone who can connect can cause them) and
// carry the request's Host and path clipped.
func (s *Server) logError(r *http.Request, err error, status int, msg string) {
	var ev *zerolog.Event
	switch {
	case status == http.StatusInternalServerError:
		ev = s.lines.event(s.now(), func() *zerolog.Event { return s.log.Error().Err(err) })
	case status >= 500 && r.Context().Err() != nil:
		ev = s.log.Debug().Err(err) // the client gave up; nobody reads the answer
	case status >= 500:
		ev = s.lines.event(s.now(), func() *zerolog.Event { return s.log.Warn().Err(err) })
	case status == http.StatusForbidden:
		ev = s.lines.event(s.now(), func() *zerolog.Event { return s.log.Warn().Str("host", clip(r.Host)).Str("reason", msg) })
	default:
		ev = s.log.Debug()
	}
	if ev.Enabled() {
		ev.Int("status", status).Str("method", clip(r.Method)).Str("path", clip(r.URL.Path)).
			Str("remote", r.RemoteAddr).Msg("request not served")
	}
}

// sendError writes the JSON error body; for 405 it adds the Allow header.
func (s *Server) sendError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", s.allowedMethods(r))
	}
	s.writeJSON(w, status, errorBody{Code: code, Message: msg, CodeCap: code, MessageCap: msg})
}

// writeJSON sends v as the JSON body with status. v must always encode: a
// failure is a programming error, answered with a fixed 500 body.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.log.Error().Err(err).Msg("encoding response")
		status = http.StatusInternalServerError
		body = []byte(`{"code":"InternalError","message":"internal error","Code":"InternalError","Message":"internal error"}`)
	}
	writeBody(w, status, body)
}

// Header values shared by every response. The slices are never modified:
// assigning them directly spares the per-request allocation of Header.Set.
var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
)

// writeBody sends a pre-encoded JSON body. Headers are set before
// WriteHeader; net/http adds Content-Length.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(status)
	_, _ = w.Write(body) // a write error means the client is gone
}
