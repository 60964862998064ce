package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The wrk Lua hook printing one parseable summary line (wrk's own output has
// no p99.9 and rounds its units).
const reportLua = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH rps=%.1f reqs=%d p50=%d p99=%d p999=%d max=%d errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
`

// target is one server the hit phase loads.
type target struct {
	name, url, token string
	pid              int // the server's process, for its CPU time (0: not measured)
}

// hitResults: per target, per connection count, one wrk summary per round.
type hitResults map[string]map[int][]map[string]string

type hitPhase struct {
	res        hitResults
	peer       bool
	base       target
	baseProc   *proc
	baseRSS    int // KiB, after the hit phase
	baseHWM    int
	genWrk     float64 // the load-generator check: req/s on the bare baseline at 64 connections
	genGo      float64
	audits     map[string]*auditResult // per daemon at info: audit, peer, workload
	wlTokenLen int                     // the workload's OIDC token, bytes
	hitDaemon  *daemon
}

// auditResult is one info-level daemon's audit trail, checked against the
// requests its /metrics counted (checkAudit).
type auditResult struct {
	lines  int
	detail string
	reqs   float64
}

// wrk runs one wrk load and returns its summary (nil on failure, recorded).
func (b *bench) wrk(t target, conns, secs int, script string) map[string]string {
	threads := 1
	if conns > 1 {
		threads = 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+15)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", fmt.Sprintf("-t%d", threads), fmt.Sprintf("-c%d", conns),
		fmt.Sprintf("-d%ds", secs), "--timeout", "5s", "--latency", "-s", script,
		"-H", "Host: 127.0.0.1", "-H", "Authorization: "+t.token, t.url)
	cpu0 := cpuNS(t.pid)
	out, err := cmd.CombinedOutput()
	cpu := cpuNS(t.pid) - cpu0
	if err != nil {
		b.fail("wrk %s c%d failed: %v", t.name, conns, err)
		return nil
	}
	for l := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(l, "BENCH "); ok {
			m := kvs(rest)
			if m["errors"] != "0" || m["non2xx"] != "0" {
				b.fail("wrk %s c%d: %s socket errors, %s non-2xx answers", t.name, conns, m["errors"], m["non2xx"])
			}
			// The server's CPU time per request, in µs: unlike req/s, it
			// hardly moves with what else the machine runs.
			if reqs := num(m, "reqs"); t.pid > 0 && cpu > 0 && reqs > 0 {
				m["cpu_us"] = strconv.FormatFloat(float64(cpu)/1e3/reqs, 'f', 3, 64)
			}
			return m
		}
	}
	b.fail("wrk %s c%d printed no summary", t.name, conns)
	return nil
}

func (b *bench) hit() *hitPhase {
	logf("hit: starting the daemon (warn), the daemon with audit (info), the daemon with the peer-uid check (info), the workload daemon (info) and the baseline")
	h := &hitPhase{res: hitResults{}, peer: true, audits: map[string]*auditResult{}}
	pHit, pAud, pPeer, pWl := freePort(), freePort(), freePort(), freePort()
	dHit := b.startDaemon("hit", pHit, b.daemonEnv("hit", pHit, "warn", "1h", "hit"))
	dAud := b.startDaemon("audit", pAud, b.daemonEnv("audit", pAud, "info", "1h", "hit"))
	// The same daemon with the peer-uid check on (ALLOWED_UIDS = our uid),
	// at the default level, as users run it, where the build has it.
	dPeer := b.startDaemon("peer", pPeer, append(b.daemonEnv("peer", pPeer, "info", "1h", "hit"),
		"CWCREDS_PROFILE_HIT_ALLOWED_UIDS="+strconv.Itoa(os.Getuid())))
	// A workload-oidc profile (SHARE=token, the default) trusting the
	// emulator's own OIDC issuer, at the default level: every request
	// presents the workload's own token, as a pod's SDK would.
	dWl := b.startDaemon("workload", pWl, b.workloadEnv("workload", pWl, "info", "wl"))
	// -compare: another build of the daemon, configured as the audit one.
	var dOther *daemon
	if b.otherBin != "" {
		pOther := freePort()
		dOther = b.startDaemon("other", pOther, b.daemonEnv("other", pOther, "info", "1h", "hit"))
		if !dOther.ready(15 * time.Second) {
			die("the -compare daemon not ready: %s", tail(dOther.log(), 3))
		}
	}
	h.hitDaemon = dHit
	if !dHit.ready(15 * time.Second) {
		die("daemon not ready: %s", tail(dHit.log(), 3))
	}
	if !dAud.ready(15 * time.Second) {
		die("audit daemon not ready: %s", tail(dAud.log(), 3))
	}
	if !dPeer.ready(15 * time.Second) {
		h.peer = false
		logf("peer-uid check not measured: this build's daemon did not start with ALLOWED_UIDS (%s)", tail(dPeer.log(), 1))
		dPeer.proc.stop()
	}
	if !dWl.ready(15 * time.Second) {
		die("workload daemon not ready: %s", tail(dWl.log(), 3))
	}
	wlToken := b.oidcToken("system:serviceaccount:bench:loader", "bench", "loader", "loader-0", 2*3600)
	h.wlTokenLen = len(wlToken)
	// The baseline answers with the daemon's exact bytes and headers.
	body, hdr := b.get(dHit.url("/v1/credentials/hit"), dHit.token("hit"))
	if body == nil {
		die("daemon cache hit failed")
	}
	b.bodyBytes = len(body)
	bodyFile := filepath.Join(b.work, "body.json")
	os.WriteFile(bodyFile, body, 0o600)
	addrFile := filepath.Join(b.work, "base.addr")
	h.baseProc = b.spawn(nil, "", b.logPath("baseline.log"), b.bin+"/baseline", "-body-file", bodyFile, "-addr-file", addrFile)
	base := ""
	for range 100 {
		if base = readFile(addrFile); base != "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if base == "" {
		die("baseline did not start")
	}
	h.base = target{"baseline", "http://" + base + "/v1/credentials/hit", dHit.token("hit"), h.baseProc.pid()}
	if !b.wait200(h.base.url, 10*time.Second, h.baseProc) {
		die("baseline not answering")
	}
	bbody, bhdr := b.get(h.base.url, "")
	if string(bbody) != string(body) {
		b.fail("baseline body differs from the daemon's")
	}
	for _, k := range []string{"Content-Type", "Cache-Control", "Content-Length"} {
		if hdr.Get(k) != bhdr.Get(k) {
			b.fail("baseline header %s differs: %q vs %q", k, hdr.Get(k), bhdr.Get(k))
		}
	}
	script := filepath.Join(b.work, "report.lua")
	os.WriteFile(script, []byte(reportLua), 0o600)
	targets := map[string]target{
		"daemon":   {"daemon", dHit.url("/v1/credentials/hit"), dHit.token("hit"), dHit.proc.pid()},
		"audit":    {"audit", dAud.url("/v1/credentials/hit"), dAud.token("hit"), dAud.proc.pid()},
		"peer":     {"peer", dPeer.url("/v1/credentials/hit"), dPeer.token("hit"), dPeer.proc.pid()},
		"workload": {"workload", dWl.url("/v1/credentials/wl"), wlToken, dWl.proc.pid()},
		"baseline": {"baseline", h.base.url, h.base.token, h.baseProc.pid()},
		// The bare baseline sent the workload's request (its ~1 KB
		// Authorization header): what a bigger request costs the client,
		// the kernel and net/http, which no server code can save.
		"baseline-wl": {"baseline-wl", h.base.url, wlToken, h.baseProc.pid()},
	}
	if dOther != nil {
		targets["other"] = target{"other", dOther.url("/v1/credentials/hit"), dOther.token("hit"), dOther.proc.pid()}
	}
	if wb, _ := b.get(targets["workload"].url, wlToken); wb == nil {
		die("workload daemon: the first request with the workload's token failed: %s", tail(dWl.log(), 3))
	}
	for r := 1; r <= b.p.rounds; r++ {
		for _, c := range b.p.hitConns {
			// Alternate the order each round so neither side always runs first.
			// The info-level daemons run at 64 connections only, to keep
			// rounds short, their order reversed each round too.
			order := []string{"daemon", "baseline"}
			if r%2 == 0 {
				order = []string{"baseline", "daemon"}
			}
			if c == 64 {
				extra := []string{"audit", "workload", "baseline-wl"}
				if h.peer {
					extra = []string{"audit", "peer", "workload", "baseline-wl"}
				}
				if b.otherBin != "" {
					extra = append([]string{"other"}, extra...)
				}
				if r%2 == 0 {
					slices.Reverse(extra)
				}
				order = append(order, extra...)
			}
			for _, tg := range order {
				if b.p.warmSecs > 0 {
					b.wrk(targets[tg], c, b.p.warmSecs, script)
					time.Sleep(500 * time.Millisecond)
				}
				if h.res[tg] == nil {
					h.res[tg] = map[int][]map[string]string{}
				}
				h.res[tg][c] = append(h.res[tg][c], b.wrk(targets[tg], c, b.p.hitSecs, script))
			}
			var parts []string
			for _, tg := range order {
				parts = append(parts, fmt.Sprintf("%s %.0f", tg, num(h.res[tg][c][r-1], "rps")))
			}
			logf("hit round %d c%d: %s req/s", r, c, strings.Join(parts, " "))
		}
	}
	// The load generator must not be the bottleneck: wrk and a Go generator
	// (test/bench/herd load, net/http keep-alive clients) each drive the bare
	// baseline once at 64 connections; the tables use wrk.
	if m := b.wrk(h.base, 64, b.p.hitSecs, script); m != nil {
		h.genWrk = num(m, "rps")
	}
	h.genGo = b.goLoad(h.base, 64, b.p.hitSecs)
	logf("load generators on the bare baseline, c64: wrk %.0f req/s, Go %.0f req/s", h.genWrk, h.genGo)

	// The baseline's RSS for the memory table, before the herd burst grows it.
	h.baseRSS, h.baseHWM = procKiB(h.baseProc.pid(), "VmRSS"), procKiB(h.baseProc.pid(), "VmHWM")
	// The daemons minted once each for the whole phase (every request a hit).
	want := 2
	if h.peer {
		want = 3
	}
	if b.otherBin != "" {
		want++
	}
	_, keys := b.emuStats()
	if keys["hit"] != want {
		b.fail("hit phase: expected %d keys for profile hit (one per daemon), emulator says %d", want, keys["hit"])
	}
	if keys["wl"] != 1 {
		b.fail("hit phase: expected 1 key for the workload profile (one token), emulator says %d", keys["wl"])
	}
	h.audits["audit"] = b.checkAudit(dAud)
	if h.peer {
		h.audits["peer"] = b.checkAudit(dPeer)
	}
	h.audits["workload"] = b.checkAudit(dWl)
	return h
}

// get fetches url with the Authorization header auth ("" none): body and
// headers, or nil on any failure.
func (b *bench) get(url, auth string) ([]byte, http.Header) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := b.httpc.Do(req)
	if err != nil {
		return nil, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, nil
	}
	return body, resp.Header
}

// goLoad drives t with test/bench/herd load (closed loop, keep-alive) and returns req/s.
func (b *bench) goLoad(t target, conns, secs int) float64 {
	out := b.outPath(fmt.Sprintf("goload-%s-c%d", t.name, conns))
	p := b.spawn(nil, out, b.logPath("goload.log"), b.bin+"/herd", "load", "-url", t.url, "-auth", t.token,
		"-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", secs), "-max", "3000000")
	if err := p.wait(time.Duration(secs+30) * time.Second); err != nil {
		b.fail("Go load generator on %s failed: %v", t.name, err)
		return math.NaN()
	}
	m := kvs(readFile(out))
	if m["failed"] != "0" {
		b.fail("Go load generator on %s: %s failed requests", t.name, m["failed"])
	}
	return num(m, "rps")
}

func (h *hitPhase) stat(tg string, c int, field string) float64 {
	var xs []float64
	for _, m := range h.res[tg][c] {
		xs = append(xs, num(m, field))
	}
	return median(xs)
}

// ratiosTo: per round, target tg's req/s ÷ ref's.
func (h *hitPhase) ratiosTo(tg, ref string, c int) []float64 {
	var rs []float64
	for i, m := range h.res[tg][c] {
		a, bb := num(m, "rps"), math.NaN()
		if i < len(h.res[ref][c]) {
			bb = num(h.res[ref][c][i], "rps")
		}
		rs = append(rs, a/bb)
	}
	return rs
}

// cpuNS is the CPU time process pid has used, in nanoseconds: the sum over
// its threads of /proc/PID/task/TID/schedstat's first field (time on a
// CPU, ns resolution). 0 for pid 0 or when unreadable.
func cpuNS(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum int64
	for _, t := range tasks {
		f := strings.Fields(readFile(filepath.Join(dir, t.Name(), "schedstat")))
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
		}
	}
	return sum
}

// cpuRatios: per round, ref's server CPU per request ÷ tg's (so, like the
// req/s ratios, 1 is as cheap as ref and lower is costlier).
func (h *hitPhase) cpuRatios(tg, ref string, c int) []float64 {
	var rs []float64
	for i, m := range h.res[tg][c] {
		bb := math.NaN()
		if i < len(h.res[ref][c]) {
			bb = num(h.res[ref][c][i], "cpu_us")
		}
		rs = append(rs, bb/num(m, "cpu_us"))
	}
	return rs
}

// cpuRatio is the median of cpuRatios with the rounds listed.
func (h *hitPhase) cpuRatio(tg, ref string, c int) string {
	rs := h.cpuRatios(tg, ref, c)
	var ss []string
	for _, r := range rs {
		ss = append(ss, fmt.Sprintf("%.2f", r))
	}
	m := median(rs)
	if math.IsNaN(m) {
		return "n/a"
	}
	return fmt.Sprintf("%.3f (rounds: %s)", m, strings.Join(ss, " "))
}

// ownRatio: per round, (tg ÷ ref) ÷ (other ÷ otherRef), the median and
// the rounds: target tg's cost relative to other, each against the bare
// baseline sent its own request.
func (h *hitPhase) ownRatio(tg, ref, other, otherRef string, c int) (string, string) {
	a, o := h.ratiosTo(tg, ref, c), h.ratiosTo(other, otherRef, c)
	var rs []float64
	var ss []string
	for i := range min(len(a), len(o)) {
		rs = append(rs, a[i]/o[i])
		ss = append(ss, fmt.Sprintf("%.2f", a[i]/o[i]))
	}
	m := median(rs)
	if math.IsNaN(m) {
		return "n/a", strings.Join(ss, " ")
	}
	return fmt.Sprintf("%.3f", m), strings.Join(ss, " ")
}

// ratio: the median of the per-round ratios target/baseline.
func (h *hitPhase) ratio(tg string, c int) string { return h.ratioTo(tg, "baseline", c) }

func (h *hitPhase) ratioTo(tg, ref string, c int) string {
	r := median(h.ratiosTo(tg, ref, c))
	if math.IsNaN(r) {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", r)
}

func (h *hitPhase) roundRatios(tg string, c int) string { return h.roundRatiosTo(tg, "baseline", c) }

func (h *hitPhase) roundRatiosTo(tg, ref string, c int) string {
	var s []string
	for _, r := range h.ratiosTo(tg, ref, c) {
		if math.IsNaN(r) || math.IsInf(r, 0) {
			s = append(s, "n/a")
		} else {
			s = append(s, fmt.Sprintf("%.2f", r))
		}
	}
	return strings.Join(s, " ")
}

// checkAudit counts the audit daemon's audit lines against the requests its
// /metrics counted. It stops the daemon first: the counts pending at
// shutdown must be flushed then. The audit trail records grants (README,
// Observe): one credential_grant line per (key, peer), with count 1, then
// credential_grant_summary lines with the count served since. Here one key
// goes to one peer (every wrk connection is this uid), so: exactly one
// grant line; the counts of the grant and summary lines add up to the
// requests served; no refusal and no overflow line.
func (b *bench) checkAudit(d *daemon) *auditResult {
	h := &auditResult{}
	ms, err := b.scrapeMetrics(d.url("/metrics"))
	if err != nil {
		b.fail("audit: %s /metrics: %v", d.name, err)
		d.proc.stop()
		return h
	}
	h.reqs = ms.sum("cwcreds_credential_requests_total", nil)
	served := ms.sum("cwcreds_credential_requests_total", labelIs("outcome", "ok"))
	d.proc.stop()
	events := map[string]int{}
	var counted float64
	for _, l := range lines(d.log()) {
		var rec struct {
			Audit bool    `json:"audit"`
			Event string  `json:"event"`
			Count float64 `json:"count"`
		}
		if json.Unmarshal([]byte(l), &rec) != nil || !rec.Audit {
			continue
		}
		events[rec.Event]++
		h.lines++
		if rec.Event == "credential_grant" || rec.Event == "credential_grant_summary" {
			counted += rec.Count
		}
	}
	var names []string
	for k, v := range events {
		names = append(names, fmt.Sprintf("%d %s", v, k))
	}
	slices.Sort(names)
	h.detail = strings.Join(names, ", ")
	logf("audit: %s: %d audit lines (%s) for %.0f requests counted (%.0f served)", d.name, h.lines, h.detail, h.reqs, served)
	if served == 0 || served != h.reqs {
		b.fail("audit: the %s daemon counted %.0f requests, %.0f served: want all served, at least one", d.name, h.reqs, served)
	}
	if events["credential_grant"] != 1 {
		b.fail("audit: %s: %d credential_grant lines for one key served to one peer, want 1 (%s)", d.name, events["credential_grant"], h.detail)
	}
	if counted != served {
		b.fail("audit: %s: the grant and summary lines count %.0f requests, the daemon served %.0f", d.name, counted, served)
	}
	for _, e := range []string{"credential_refusal", "credential_refusal_summary", "audit_overflow"} {
		if events[e] > 0 {
			b.fail("audit: %s: %d %s lines, want none", d.name, events[e], e)
		}
	}
	return h
}
