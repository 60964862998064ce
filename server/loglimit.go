package server

import (
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// Bounds of the log lines that refused requests cause one by one (see
// lineLimiter). journald drops every line of a service past 10,000 in 30 s
// (its default RateLimitBurst): a local user sending ~30,000 refused
// requests a second, each logged, silenced the whole log for the rest of
// each window, the audit trail's grants and refusals included, and with a
// 16 KiB Host header wrote over 100 MiB/s. These lines now stay below 100
// at once plus 10 a second (400 per 30 s window); the audit trail, which
// summarises by itself (see auditor), and the metrics still count every
// request.
const (
	refusalLinesBurst  = 100
	refusalLinesPerSec = 10
	// maxLoggedField bounds a request-supplied value (Host, path) in a
	// log line.
	maxLoggedField = 256
)

// lineLimiter bounds log lines caused by requests that anyone who can
// connect may send (refusals of a Host, a proxy or browser header, a wrong
// admin or IMDS token, a peer that cannot be identified, failures answered
// 5xx): at most refusalLinesBurst at once and refusalLinesPerSec after. A
// line written after some were dropped says how many (lines_suppressed).
// It is safe for concurrent use.
type lineLimiter struct {
	lim        *rate.Limiter
	suppressed atomic.Uint64
}

func newLineLimiter() *lineLimiter {
	return &lineLimiter{lim: rate.NewLimiter(refusalLinesPerSec, refusalLinesBurst)}
}

// event returns ev, with the count of the lines dropped since the last
// one written, when a line may be written at now; otherwise it counts the
// line as dropped and returns nil, zerolog's disabled event, on which
// every method is a no-op. ev is built by the caller only when needed:
// pass a function so that a dropped line costs nothing.
func (l *lineLimiter) event(now time.Time, ev func() *zerolog.Event) *zerolog.Event {
	if !l.lim.AllowN(now, 1) {
		l.suppressed.Add(1)
		return nil
	}
	e := ev()
	if n := l.suppressed.Swap(0); n > 0 {
		e = e.Uint64("lines_suppressed", n)
	}
	return e
}

// clip bounds s, a request-supplied value, for a log line.
func clip(s string) string {
	if len(s) <= maxLoggedField {
		return s
	}
	return s[:maxLoggedField] + "…"
}
