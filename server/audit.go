package server

// The audit trail records grants, not requests (issue 13): one line the
// first time a key is handed to a peer, then at most one line per
// AuditInterval per (key, peer) with how many more times it was served.
// Refusals are summarised the same way per (profile, peer, reason). Every
// request is still counted in RequestMetrics.

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
)

// AuditInterval is how often Server.RunAudit writes the summary lines: a
// (key, peer) or (profile, peer, reason) pair busy for an hour costs at
// most 60 lines plus its first.
const AuditInterval = time.Minute

// maxAuditPairs bounds the pairs the audit trail tracks. One pair per
// (key, peer) served and per (profile, peer, reason) refused within
// auditForget; a node never has that many. Past it, requests of new pairs
// are served and counted in metrics, and the audit trail reports them in
// one "audit_overflow" line per interval.
const maxAuditPairs = 4096

// auditForget is how many intervals without a request a pair is kept: a
// pair idle that long is forgotten, and a later request logs its first
// line again.
const auditForget = 15

// auditPair is what the audit trail counts per line: a key served to a
// peer (keyID set, outcome ok), or a refusal of a profile to a peer for a
// reason. All strings are configured names, key ids or constants: never
// request input.
type auditPair struct {
	profile string // "" for an unknown profile
	keyID   string // the served key's id; "" for refusals
	peer    peerKey
	outcome Outcome
	why     string // the refusal's reason; "" for grants
	imds    bool   // served by the IMDS role's route
	// identity is the workload identity a key was granted to (the claims
	// of the token presented, which upstream verified when it minted the
	// key); nil otherwise. The broker hands out one pointer per token, so
	// each token's first grant is a line of its own.
	identity *broker.Identity
}

// auditCount is one tracked pair's pending count.
type auditCount struct {
	n atomic.Uint64 // requests since the last line
	// Guarded by auditor.mu.
	since time.Time // start of the period n counts
	idle  int       // intervals in a row without a request
}

// auditor tracks the pairs. The hot path (a pair already tracked) is one
// atomic load of an immutable map, a lookup and an atomic add: no lock and
// no allocation. A new pair takes mu and copies the map.
type auditor struct {
	log zerolog.Logger
	now func() time.Time
	max int

	pairs atomic.Pointer[map[auditPair]*auditCount] // copy-on-write, under mu

	mu        sync.Mutex
	retired   map[auditPair]*auditCount // forgotten at the last flush: reported once more, then dropped
	untracked atomic.Uint64             // requests of pairs refused a place since the last flush
	overflow  bool                      // the overflow line of this interval is written
	since     time.Time                 // start of the current interval
}

func newAuditor(log zerolog.Logger, now func() time.Time) *auditor {
	a := &auditor{log: log.With().Bool("audit", true).Logger(), now: now, max: maxAuditPairs, since: now()}
	a.pairs.Store(new(map[auditPair]*auditCount{}))
	return a
}

// enabled reports, without building an event, whether lines at lvl are
// written: a pair whose lines are not is not tracked.
func (a *auditor) enabled(lvl zerolog.Level) bool {
	return a.log.GetLevel() <= lvl && zerolog.GlobalLevel() <= lvl
}

// level is the level of pair's lines: a served key, an unknown profile and
// no valid key at info; a wrong token, a forbidden user and our own
// failures at warn.
func (k *auditPair) level() zerolog.Level {
	switch k.outcome {
	case OutcomeOK, OutcomeUnknownProfile, OutcomeNoValidKey:
		return zerolog.InfoLevel
	default:
		return zerolog.WarnLevel
	}
}

// served records that the key keyID of profile was handed to r's peer
// (and, on a workload profile, to the identity id, else nil). It is the
// hot path: it allocates nothing once the pair is tracked.
func (s *Server) auditServed(r *http.Request, profile, keyID string, id *broker.Identity) {
	s.record(r, auditPair{profile: profile, keyID: keyID, outcome: OutcomeOK, identity: id}, false)
}

// auditRefused records that r was refused with o for why.
func (s *Server) auditRefused(r *http.Request, profile string, o Outcome, why string) {
	s.record(r, auditPair{profile: profile, outcome: o, why: strings.TrimPrefix(why, "credential request refused: ")}, true)
}

// record counts r in k's pair, tracking it (and writing its first line)
// when it is new. lookup: when the connection limiter did not identify the
// peer, ask Peers (refusals only: a grant never costs a lookup).
func (s *Server) record(r *http.Request, k auditPair, lookup bool) {
	a := s.audit
	if !a.enabled(k.level()) {
		return
	}
	k.peer = s.auditPeer(r, lookup)
	k.imds = strings.HasPrefix(r.URL.Path, imdsCredsPath)
	if c := (*a.pairs.Load())[k]; c != nil {
		c.n.Add(1)
		return
	}
	a.first(s, r, k)
}

// auditPeer is r's peer as the connection limiter identified it at accept
// (a uid, else an address; see LimitConnections), else (with lookup) the
// uid Peers finds, else r's remote IP address.
func (s *Server) auditPeer(r *http.Request, lookup bool) peerKey {
	if k, ok := r.Context().Value(connPeerKey{}).(peerKey); ok {
		return k
	}
	if lookup && s.peers != nil {
		if uid, err := s.peers.PeerUID(r); err == nil {
			return peerKey{uid: uid, hasUID: true}
		}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return peerKey{}
	}
	return peerKey{addr: ap.Addr().Unmap()}
}

// first tracks the new pair k and writes its first line, or counts r as
// untracked when the table is full.
func (a *auditor) first(s *Server, r *http.Request, k auditPair) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := *a.pairs.Load()
	if c := old[k]; c != nil { // another request tracked it first
		c.n.Add(1)
		return
	}
	now := a.now()
	if len(old) >= a.max {
		a.untracked.Add(1)
		if !a.overflow {
			a.overflow = true
			a.log.Warn().Str("event", "audit_overflow").Int("max_pairs", a.max).Time("at", now).
				Msg("audit table full: requests of new (key, peer) and (profile, peer, reason) pairs are counted in one line per interval, without their own lines")
		}
		return
	}
	next := make(map[auditPair]*auditCount, len(old)+1)
	for p, c := range old {
		next[p] = c
	}
	next[k] = &auditCount{since: now}
	a.pairs.Store(&next)

	ev := a.event(k, "credential_grant", "credential_refusal").Time("at", now).Int("count", 1)
	if s.peerIdentity != nil {
		if uid, pid, ok := s.peerIdentity(r); ok {
			if !k.peer.hasUID {
				ev = ev.Int("peer_uid", uid)
			}
			if pid > 0 { // 0: not known (package peer never knows it)
				ev = ev.Int("peer_pid", pid)
			}
		}
	}
	if k.outcome == OutcomeOK {
		ev.Msg("key granted to a peer for the first time")
	} else {
		ev.Msg("credential request refused")
	}
}

// event starts a line about pair k: grant (for a served key) or refusal
// event names, and the pair's fields.
func (a *auditor) event(k auditPair, grant, refusal string) *zerolog.Event {
	ev := a.log.WithLevel(k.level())
	if k.outcome == OutcomeOK {
		ev = ev.Str("event", grant)
	} else {
		ev = ev.Str("event", refusal)
	}
	if k.profile != "" {
		ev = ev.Str("profile", k.profile)
	}
	ev = ev.Str("outcome", k.outcome.String()).Str("peer", k.peer.String())
	if k.peer.hasUID {
		ev = ev.Uint32("peer_uid", k.peer.uid)
	}
	if k.keyID != "" {
		ev = ev.Str("key_id_suffix", KeySuffix(k.keyID))
	}
	if k.why != "" {
		ev = ev.Str("reason", k.why)
	}
	if k.imds {
		ev = ev.Str("via", "imds")
	}
	if k.identity != nil {
		ev = ev.Object("identity", *k.identity)
	}
	return ev
}

// flush writes a summary line for every pair with requests since its last
// line, and the overflow count, and forgets pairs idle for auditForget
// intervals. RunAudit calls it every AuditInterval and once more when it
// returns (after the HTTP server has drained), so that no count is lost.
func (a *auditor) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	cur := *a.pairs.Load()
	for k, c := range a.retired { // counted between their last load and the previous flush
		a.summarise(k, c, now)
	}
	a.retired = nil
	var forget []auditPair
	for k, c := range cur {
		if !a.summarise(k, c, now) {
			if c.idle++; c.idle >= auditForget {
				forget = append(forget, k)
			}
		}
	}
	if len(forget) > 0 {
		next := make(map[auditPair]*auditCount, len(cur)-len(forget))
		for k, c := range cur {
			next[k] = c
		}
		a.retired = make(map[auditPair]*auditCount, len(forget))
		for _, k := range forget {
			a.retired[k] = cur[k]
			delete(next, k)
		}
		a.pairs.Store(&next)
	}
	if n := a.untracked.Swap(0); n > 0 {
		a.log.Warn().Str("event", "audit_overflow").Int("max_pairs", a.max).Uint64("count", n).
			Time("since", a.since).Time("until", now).
			Msg("audit table full: requests of untracked pairs, served or refused, in this period")
	}
	a.overflow = false
	a.since = now
}

// summarise writes k's summary line when it has requests since its last
// line, and reports whether it had.
func (a *auditor) summarise(k auditPair, c *auditCount, now time.Time) bool {
	n := c.n.Swap(0)
	if n == 0 {
		return false
	}
	a.event(k, "credential_grant_summary", "credential_refusal_summary").
		Uint64("count", n).Time("since", c.since).Time("until", now).
		Msg("requests since the pair's previous audit line")
	c.since, c.idle = now, 0
	return true
}

// RunAudit writes the audit trail's summary lines every AuditInterval
// until ctx ends, then flushes the pending counts and returns. Cancel ctx
// only after the HTTP server has drained (http.Server.Shutdown), so that
// the final flush counts every request.
func (s *Server) RunAudit(ctx context.Context) {
	t := time.NewTicker(AuditInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.audit.flush()
			return
		case <-t.C:
			s.audit.flush()
		}
	}
}
