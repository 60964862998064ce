package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The soak's wrk script rotates over the profiles, each with its own client
// token (read from the token files by the script, so no token is on a
// command line), and counts every answer that is not a 200 with a key and
// the distinct key ids it was served (to see refreshed keys reach clients).
const soakLua = `
local reqs, n = {}, 0
threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  for j, p in ipairs(profiles) do
    local f = assert(io.open(p[2], "r"))
    local tok = f:read("*a")
    f:close()
    reqs[j] = wrk.format("GET", "/v1/credentials/" .. p[1], { ["Host"] = "127.0.0.1", ["Authorization"] = tok })
  end
  bad, keys, seen = 0, "", {}
end
function request()
  n = n + 1
  return reqs[n % #reqs + 1]
end
function response(status, headers, body)
  local k = status == 200 and string.match(body, '"AccessKeyId":"([^"]+)"')
  if not k then
    bad = bad + 1
  elseif not seen[k] then
    seen[k] = true
    keys = keys .. k .. " "
  end
end
function done(summary, latency, requests)
  local nbad, all, nkeys = 0, {}, 0
  for _, t in ipairs(threads) do
    nbad = nbad + t:get("bad")
    for k in string.gmatch(t:get("keys"), "%S+") do all[k] = true end
  end
  for _ in pairs(all) do nkeys = nkeys + 1 end
  local e = summary.errors
  io.write(string.format("SOAK requests=%d rps=%.1f p50=%d p99=%d p999=%d max=%d errors=%d non2xx=%d bad=%d keys=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max, e.connect + e.read + e.write + e.timeout, e.status, nbad, nkeys))
end
`

// sample is one scrape of the soak daemon: its /metrics and VmRSS.
type sample struct {
	phase      string
	t          int // s from the start of the load
	at         time.Time
	goroutines int
	heap       float64
	vmrssKiB   int
	mints      float64 // successful mints, all profiles
	mintErrors float64
	reqOK      float64
	reqOther   float64
	expiryMax  float64
	mintsBy    map[string]float64
}

func (b *bench) scrapeSample(d *daemon) (sample, error) {
	s := sample{at: time.Now(), vmrssKiB: procKiB(d.proc.pid(), "VmRSS")}
	ms, err := b.scrapeMetrics(d.url("/metrics"))
	if err != nil {
		return s, err
	}
	if !ms.has("go_goroutines") {
		return s, fmt.Errorf("/metrics has no go_goroutines")
	}
	s.goroutines = int(ms.sum("go_goroutines", nil))
	s.heap = ms.sum("go_memstats_heap_inuse_bytes", nil)
	s.mintsBy = ms.byLabel("cwcreds_mints_total", "profile", labelIs("result", "ok"))
	for _, v := range s.mintsBy {
		s.mints += v
	}
	s.mintErrors = ms.sum("cwcreds_mints_total", labelIsNot("result", "ok"))
	s.reqOK = ms.sum("cwcreds_credential_requests_total", labelIs("outcome", "ok"))
	s.reqOther = ms.sum("cwcreds_credential_requests_total", labelIsNot("outcome", "ok"))
	s.expiryMax = ms.maxOf("cwcreds_key_expiry_seconds")
	return s, nil
}

func (b *bench) soak() {
	p := b.p
	logf("soak: %d profiles with 1-minute keys, upstream %dms; wrk c%d at max rate for %ds plus a new connection every %s per profile",
		p.soakProfiles, p.upstreamLatencyMS, p.soakC, p.soakSecs, p.soakTrickle)
	b.setLatency(fmt.Sprintf("%dms", p.upstreamLatencyMS))
	port := freePort()
	var names []string
	for i := 1; i <= p.soakProfiles; i++ {
		names = append(names, fmt.Sprintf("soak%d", i))
	}
	d := b.startDaemon("soak", port, b.daemonEnv("soak", port, "warn", "1m", names...))
	if !d.ready(15 * time.Second) {
		die("soak daemon not ready: %s", tail(d.log(), 3))
	}
	// Idle before the load. Every profile minted its first key at start-up
	// and refreshes it 37-40 s later (2/3 of 59-60 s, up to 5 % earlier),
	// when 20-23 s remain; the daemon serves a refreshed key 5 s after its
	// mint (its key warm-up), the previous one meanwhile. The load starts once
	// every key has at most 29 s left, so each profile's first refresh falls
	// 6-9 s into the load and its key reaches clients by ~15 s (the quick
	// soak lasts 18 s); the second comes ~37 s later (the full one lasts 60 s).
	time.Sleep(2 * time.Second)
	deadline := time.Now().Add(50 * time.Second)
	var pre sample
	for {
		var err error
		if pre, err = b.scrapeSample(d); err != nil {
			die("soak: /metrics did not answer: %v", err)
		}
		if pre.expiryMax > 0 && pre.expiryMax <= 29 {
			break
		}
		if time.Now().After(deadline) {
			die("soak: keys never came within 29 s of expiry (%.1f s left)", pre.expiryMax)
		}
		time.Sleep(500 * time.Millisecond)
	}
	pre.phase = "idle-pre"
	samples := []sample{pre}

	var lua strings.Builder
	lua.WriteString("local profiles = {\n")
	for _, n := range names {
		fmt.Fprintf(&lua, "  { %q, %q },\n", n, d.tokenFile(n))
	}
	lua.WriteString("}\n" + soakLua)
	script := filepath.Join(b.work, "soak.lua")
	os.WriteFile(script, []byte(lua.String()), 0o600)
	t0 := time.Now()
	wrkOut := b.outPath("soak-wrk")
	wrk := b.spawn(nil, wrkOut, wrkOut, "wrk", "-t2", fmt.Sprintf("-c%d", p.soakC), fmt.Sprintf("-d%ds", p.soakSecs),
		"--timeout", "5s", "-s", script, d.url("/"))
	// The trickle: per profile, a process that opens a new connection for every
	// request, so connection set-up and tear-down run all along.
	var trickle []*proc
	tfiles := map[string]string{}
	for _, n := range names {
		tfiles[n] = b.outPath("trickle." + n)
		trickle = append(trickle, b.spawn(nil, tfiles[n], b.logPath("trickle.log"), b.bin+"/fetch",
			"-url", d.url("/v1/credentials/"+n), "-token-file", d.tokenFile(n), "-every", p.soakTrickle.String(),
			"-for", fmt.Sprintf("%ds", p.soakSecs), "-max", strconv.Itoa(p.soakSecs*20)))
	}
	// Samples strictly inside the load: t = every, 2*every, ... < soakSecs.
	for k := 1; k <= p.soakSecs/p.soakEvery-1; k++ {
		time.Sleep(time.Until(t0.Add(time.Duration(k*p.soakEvery) * time.Second)))
		s, err := b.scrapeSample(d)
		if err != nil {
			b.fail("soak: /metrics did not answer at %d s: %v", k*p.soakEvery, err)
			continue
		}
		s.phase, s.t = "load", k*p.soakEvery
		samples = append(samples, s)
	}
	if err := wrk.wait(time.Duration(p.soakSecs+20) * time.Second); err != nil {
		b.fail("soak: wrk failed: %v: %s", err, tail(wrkOut, 2))
	}
	trickleFailed := 0
	for _, t := range trickle {
		if t.wait(30*time.Second) != nil {
			trickleFailed++
		}
	}
	// Idle after the load: wait (10 s at most) for the goroutines to come
	// back to the idle count as wrk's and the trickle's connections close.
	var post sample
	deadline = time.Now().Add(10 * time.Second)
	for {
		var err error
		if post, err = b.scrapeSample(d); err != nil {
			die("soak: /metrics did not answer after the load: %v", err)
		}
		if post.goroutines <= pre.goroutines+p.soakIdleSlack || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	post.phase, post.t = "idle-post", int(post.at.Sub(t0).Seconds()+0.5)
	samples = append(samples, post)

	// ---- verdicts
	var w map[string]string
	for _, l := range lines(wrkOut) {
		if rest, ok := strings.CutPrefix(l, "SOAK "); ok {
			w = kvs(rest)
		}
	}
	if w == nil {
		b.fail("soak: wrk printed no summary: %s", tail(wrkOut, 3))
		w = map[string]string{}
	} else if w["errors"] != "0" || w["non2xx"] != "0" || w["bad"] != "0" {
		b.fail("soak: wrk saw %s socket errors, %s non-2xx answers, %s answers that were not a 200 with a key", w["errors"], w["non2xx"], w["bad"])
	}
	var all []fetchLine
	for _, n := range names {
		all = append(all, fetchLines(tfiles[n])...)
	}
	tn, tok := len(all), countOK(all)
	if trickleFailed != 0 || tn != tok || tn == 0 {
		b.fail("soak: new-connection clients: %d of %d requests not 200 (%d processes failed)", tn-tok, tn, trickleFailed)
	}
	dOther, dOK, dMErr := post.reqOther-pre.reqOther, post.reqOK-pre.reqOK, post.mintErrors-pre.mintErrors
	if dOther != 0 {
		b.fail("soak: the daemon counted %.0f credential requests with an outcome other than ok", dOther)
	}
	if dMErr != 0 {
		b.fail("soak: %.0f failed mints", dMErr)
	}
	var refreshDetail, seenDetail []string
	for _, n := range names {
		r := post.mintsBy[n] - pre.mintsBy[n]
		refreshDetail = append(refreshDetail, fmt.Sprintf("%s %.0f", n, r))
		if r < 1 {
			b.fail("soak: profile %s was not refreshed during the load", n)
		}
		// A refresh must reach the clients: the profile's new-connection client
		// must have been served its first key and a refreshed one.
		k := distinctOK(fetchLines(tfiles[n]))
		seenDetail = append(seenDetail, fmt.Sprintf("%s %d", n, k))
		if k < 2 {
			b.fail("soak: the clients of profile %s were served %d key(s): no refreshed key reached them", n, k)
		}
	}
	dMints := post.mints - pre.mints
	minted := float64(p.soakProfiles) + dMints
	if wk := num(w, "keys"); wk > minted {
		b.fail("soak: wrk was served %.0f distinct keys, but only %.0f were minted", wk, minted)
	}
	// Goroutines at equal connection counts: under load the count also holds
	// one net/http background-read goroutine per request in flight at that
	// instant (0 to 64), so the floor is compared: the lowest sample of the
	// first third against the lowest of the last third (the warm-up sample
	// left out); and idle before and after, where it is exact.
	var loads []sample
	for _, s := range samples {
		if s.phase == "load" {
			loads = append(loads, s)
		}
	}
	third := func(first bool, f func(sample) float64) []float64 {
		xs := []float64{}
		if len(loads) > 1 {
			for _, s := range loads[1:] {
				xs = append(xs, f(s))
			}
		}
		k := (len(xs) + 2) / 3
		if first {
			return xs[:k]
		}
		return xs[len(xs)-k:]
	}
	gor := func(s sample) float64 { return float64(s.goroutines) }
	heap := func(s sample) float64 { return s.heap }
	rss := func(s sample) float64 { return float64(s.vmrssKiB) * 1024 }
	var gFirst, gLast, heapA, heapB, rssA, rssB float64
	gRange := ""
	grows := func(a, b float64) bool { d := b - a; return d > p.soakMemAbs && d > p.soakMemRel*a }
	if len(loads) < 4 {
		b.fail("soak: only %d samples under load", len(loads))
	} else {
		gFirst, gLast = slices.Min(third(true, gor)), slices.Min(third(false, gor))
		var gs []int
		for _, s := range loads {
			gs = append(gs, s.goroutines)
		}
		gRange = fmt.Sprintf("%d-%d", slices.Min(gs), slices.Max(gs))
		if gLast-gFirst > float64(p.soakLoadSlack) {
			b.fail("soak: goroutines under load grew from %.0f to %.0f (lowest of the first and last thirds; more than %d)", gFirst, gLast, p.soakLoadSlack)
		}
		// Memory: medians of the first and last thirds of the samples under
		// load, leaving out the first (warm-up: wrk connecting, buffers growing).
		heapA, heapB = median(third(true, heap)), median(third(false, heap))
		rssA, rssB = median(third(true, rss)), median(third(false, rss))
		if grows(heapA, heapB) {
			b.fail("soak: heap in use grew from %.1f to %.1f MiB under load", heapA/(1<<20), heapB/(1<<20))
		}
		if grows(rssA, rssB) {
			b.fail("soak: RSS grew from %.1f to %.1f MiB under load", rssA/(1<<20), rssB/(1<<20))
		}
	}
	if post.goroutines > pre.goroutines+p.soakIdleSlack {
		b.fail("soak: goroutines idle after the load %d, before %d (more than %d apart 10 s after the load)", post.goroutines, pre.goroutines, p.soakIdleSlack)
	}
	d.proc.stop()
	b.setLatency("0s")

	// ---- report
	total := int(time.Since(b.start).Seconds())
	var st strings.Builder
	fmt.Fprintln(&st, "| t (s) | phase | req/s (daemon) | goroutines | VmRSS (MiB) | heap in use (MiB) | mints (all profiles) |")
	fmt.Fprintln(&st, "| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
	for i, s := range samples {
		rps := ""
		if s.phase == "load" && i > 0 && s.at.After(samples[i-1].at) {
			rps = fmt.Sprintf("%.1fk", (s.reqOK-samples[i-1].reqOK)/float64(s.at.Sub(samples[i-1].at).Milliseconds()))
		}
		fmt.Fprintf(&st, "| %d | %s | %s | %d | %.1f | %.1f | %.0f |\n", s.t, s.phase, rps, s.goroutines,
			float64(s.vmrssKiB)/1024, s.heap/(1<<20), s.mints)
	}
	var sm strings.Builder
	row := func(cells ...string) { fmt.Fprintf(&sm, "| %s |\n", strings.Join(cells, " | ")) }
	row("Measure", "Result", "Pass if")
	row("---", "---", "---")
	row(fmt.Sprintf("Load: wrk -t2 -c%d, %d s, keep-alive, rotating over %d profiles (1-min keys, upstream %d ms)", p.soakC, p.soakSecs, p.soakProfiles, p.upstreamLatencyMS),
		fmt.Sprintf("%s requests, %s req/s; p50 / p99 / p99.9 / max %s / %s / %s / %s", w["requests"], krps(num(w, "rps")),
			us(num(w, "p50")), us(num(w, "p99")), us(num(w, "p999")), us(num(w, "max"))), "")
	row("Errors: wrk socket errors / non-2xx / not a 200 with a key; daemon requests with another outcome than ok",
		fmt.Sprintf("%s / %s / %s; %.0f", w["errors"], w["non2xx"], w["bad"], dOther), "all 0")
	row(fmt.Sprintf("New connections: one per request, every %s per profile", p.soakTrickle),
		fmt.Sprintf("%d requests on as many connections, %d×200", tn, tok), "all 200")
	row("Daemon: credential requests counted (ok)",
		fmt.Sprintf("%.0f (the clients counted %.0f answers; wrk does not count those in flight when it stops)", dOK, num(w, "requests")+float64(tn)), "")
	row("Background refreshes during the load (mints per profile)",
		fmt.Sprintf("%.0f: %s; %.0f failed", dMints, strings.Join(refreshDetail, ", "), dMErr), "≥ 1 per profile, 0 failed")
	row("Keys served: distinct keys per profile seen by the new-connection clients; by wrk (all profiles)",
		fmt.Sprintf("%s; wrk %s of the %.0f minted", strings.Join(seenDetail, ", "), w["keys"], minted), "≥ 2 per profile (a refreshed key served); wrk ≤ minted")
	if len(loads) >= 4 {
		memBound := fmt.Sprintf("growth ≤ %.0f MiB or %.0f %%", p.soakMemAbs/(1<<20), p.soakMemRel*100)
		row(fmt.Sprintf("Goroutines under load: lowest sample of the first / last third (all samples: %s)", gRange),
			fmt.Sprintf("%.0f / %.0f", gFirst, gLast), fmt.Sprintf("growth ≤ %d", p.soakLoadSlack))
		row("Goroutines idle: before the load / after it", fmt.Sprintf("%d / %d", pre.goroutines, post.goroutines), fmt.Sprintf("growth ≤ %d", p.soakIdleSlack))
		row("Heap in use under load: median of the first / last third of the samples",
			fmt.Sprintf("%.2f / %.2f MiB (%+.2f)", heapA/(1<<20), heapB/(1<<20), (heapB-heapA)/(1<<20)), memBound)
		row("VmRSS under load: median of the first / last third of the samples",
			fmt.Sprintf("%.1f / %.1f MiB (%+.1f)", rssA/(1<<20), rssB/(1<<20), (rssB-rssA)/(1<<20)), memBound)
		row("VmRSS idle: before the load / after it", mib(pre.vmrssKiB)+" / "+mib(post.vmrssKiB)+" MiB", "(reported)")
	}
	fmt.Printf("\ncwcreds soak (%s mode, %d s of load, %d cores, %ds in all)\n\n%s\n%s\n", b.mode, p.soakSecs, runtime.NumCPU(), total, st.String(), sm.String())
	if b.write {
		section := fmt.Sprintf("<!-- soak -->\n\n## Soak\n\nGenerated by `scripts/bench --soak --write` (method above). Run on %s (%d s): %s.\n\n%s\nSamples (every %d s; req/s is the daemon's ok-request counter between samples, so it includes the new-connection clients):\n\n%s",
			time.Now().UTC().Format("2006-01-02"), total, b.machine(), sm.String(), p.soakEvery, st.String())
		b.rewrite("<!-- soak -->", section, "")
		logf("wrote the soak section of BENCHMARKS.md")
	}
}
