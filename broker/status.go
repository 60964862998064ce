package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// Status is a point-in-time view of one profile for status pages and
// readiness checks. It never holds a secret: only the public key id.
type Status struct {
	Profile string       `json:"profile"`
	Source  cwapi.Source `json:"source"`
	// Healthy is true when the profile holds a key that may be served now.
	Healthy   bool   `json:"healthy"`
	Principal string `json:"principal,omitempty"`
	// AccessKeyID and Expiration describe the key served now (or, when
	// none may be served, the newest key held).
	AccessKeyID string     `json:"accessKeyId,omitempty"`
	Expiration  *time.Time `json:"expiration,omitempty"`
	// RefreshAt is when the background refresh will replace the key.
	RefreshAt   *time.Time `json:"refreshAt,omitempty"`
	LastRefresh *time.Time `json:"lastRefresh,omitempty"`
	// LastError describes the last failed mint with a fixed phrase for its
	// class (see publicReason), never text from upstream; with
	// LastErrorHTTPStatus and LastErrorCode (gRPC code name) when upstream
	// answered. The daemon's log has the (scrubbed) upstream message.
	LastError           string     `json:"lastError,omitempty"`
	LastErrorHTTPStatus int        `json:"lastErrorHttpStatus,omitempty"`
	LastErrorCode       string     `json:"lastErrorCode,omitempty"`
	LastErrorAt         *time.Time `json:"lastErrorAt,omitempty"`
	// NextAttempt is set while the profile is backing off after failures.
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
	// ConsecutiveFailures counts failed mints since the last success.
	ConsecutiveFailures int `json:"consecutiveFailures,omitempty"`
	// LastMintLatencySeconds is how long the last successful mint took
	// upstream.
	LastMintLatencySeconds float64 `json:"lastMintLatencySeconds,omitempty"`
	// WarmingAccessKeyID and WarmingUntil are set while a newly minted key
	// warms up (CacheOptions.KeyWarmup): AccessKeyID, Expiration and
	// Principal describe the previous key, still served, and the new one
	// takes over at WarmingUntil.
	WarmingAccessKeyID string     `json:"warmingAccessKeyId,omitempty"`
	WarmingUntil       *time.Time `json:"warmingUntil,omitempty"`
	// Reason says why the profile is not Healthy; empty when it is. Like
	// LastError it is safe to show to every local user: it is built from
	// fixed phrases, never from upstream text.
	Reason string `json:"reason,omitempty"`
	// Workload is set for a workload profile, which holds a key per
	// identity rather than one: it is Healthy whenever configured, and its
	// identities' keys are not listed (one line per pod would make a status
	// page of thousands of lines, and name every workload to every reader).
	Workload *WorkloadStatus `json:"workload,omitempty"`
	// S3Check is where the S3 check (CacheOptions.Verifier) of the newest
	// key stands (WarmingAccessKeyID while it warms up, else AccessKeyID):
	// "checking", "accepted", "refused" (S3 answered an error other than
	// propagation, or still InvalidAccessKeyId after
	// VerifyPropagationLimit) or "unanswered" (S3 could not be asked);
	// empty without a Verifier. S3ErrorCode and S3HTTPStatus are S3's
	// error answer behind a refused or unanswered verdict (the code is S3's
	// fixed token, e.g. "AccessDenied"); S3CheckedAt is when the check
	// started, or ended once it has.
	S3Check      string     `json:"s3Check,omitempty"`
	S3ErrorCode  string     `json:"s3ErrorCode,omitempty"`
	S3HTTPStatus int        `json:"s3HttpStatus,omitempty"`
	S3CheckedAt  *time.Time `json:"s3CheckedAt,omitempty"`
}

// WorkloadStatus summarises a workload profile.
type WorkloadStatus struct {
	// Identities is how many identities hold an entry now.
	Identities int `json:"identities"`
	// MintsLastHour counts the mints started in the last 60 minutes.
	MintsLastHour int `json:"mintsLastHour"`
}

// errShuttingDown is the failure of a mint Run's shutdown cancelled.
var errShuttingDown = errors.New("broker is shutting down")

// publicReason describes a mint failure for anyone who can reach the
// daemon (Status, UnavailableError, hence /v1/profiles, 503 bodies, /readyz,
// systemd's STATUS=): a fixed phrase chosen by the failure's class, plus the
// upstream HTTP status and gRPC code name when upstream answered. It never
// holds text from upstream, a proxy in between or the token file: such text
// can echo the credential in a form no scrubber recognises (base64, split,
// case-changed). The full error, scrubbed of the credential, goes to the
// daemon's log only.
//
// httpStatus is 0 and code "" when upstream did not answer.
func publicReason(err error) (phrase string, httpStatus int, code string) {
	var api *cwapi.APIError
	if errors.As(err, &api) {
		if api.Code != 0 {
			code = api.CodeName() // a fixed name, or "code N"
		}
		answered := fmt.Sprintf("HTTP %d", api.StatusCode)
		if code != "" {
			answered += " (" + code + ")"
		}
		switch {
		case api.StatusCode == http.StatusUnauthorized, api.StatusCode == http.StatusForbidden:
			phrase = rejectionHint(err)
		case api.StatusCode == http.StatusTooManyRequests:
			phrase = "upstream is rate limiting key minting"
		case api.Temporary():
			phrase = "upstream failed to mint a key"
		default:
			phrase = "upstream refused to mint a key"
		}
		return phrase + "; upstream answered " + answered, api.StatusCode, code
	}
	var dns *net.DNSError
	var cert *tls.CertificateVerificationError
	var ne net.Error
	switch {
	case errors.Is(err, errRemoved):
		return errRemoved.Error(), 0, ""
	case errors.Is(err, errShuttingDown):
		return errShuttingDown.Error(), 0, ""
	case errors.Is(err, cwapi.ErrBadToken):
		return "the profile's token file cannot be used (missing, empty, malformed, or unsafe owner or mode); the daemon's log says why", 0, ""
	case errors.Is(err, cwapi.ErrBadReply):
		return "malformed upstream reply: not a usable key; the daemon's log says why", 0, ""
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "upstream did not answer in time (deadline exceeded)", 0, ""
	case errors.As(err, &dns):
		return "the upstream API's host name did not resolve", 0, ""
	case errors.As(err, &cert):
		return "the upstream API's TLS certificate is not trusted", 0, ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return "could not reach the upstream API: connection refused", 0, ""
	case errors.As(err, new(*url.Error)), errors.As(err, new(*net.OpError)):
		return "could not reach the upstream API (network or proxy error); the daemon's log says why", 0, ""
	}
	return "minting a key failed; the daemon's log says why", 0, ""
}

// mintLog counts a profile's mints per minute over the last hour, for
// Status (workload profiles report mints in the last hour).
type mintLog struct {
	mu      sync.Mutex
	minutes [60]struct {
		at int64 // the minute (unix seconds / 60) this slot counts
		n  int
	}
}

func (l *mintLog) add(now time.Time) {
	m := now.Unix() / 60
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &l.minutes[m%60]
	if s.at != m {
		s.at, s.n = m, 0
	}
	s.n++
}

// lastHour is how many mints started in the 60 minutes up to now.
func (l *mintLog) lastHour(now time.Time) int {
	m := now.Unix() / 60
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.minutes {
		if s.at > m-60 && s.at <= m {
			n += s.n
		}
	}
	return n
}
