package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type herdPhase struct {
	mints     int
	out, base map[string]string
}

func (b *bench) herd(h *hitPhase) *herdPhase {
	n := b.p.herdN
	logf("herd: %d clients on a cold profile, upstream latency %dms", n, b.p.upstreamLatencyMS)
	r := &herdPhase{}
	// The floor: the same burst of released requests against the bare
	// baseline, which needs no upstream; the daemon's herd cannot beat the
	// upstream latency plus this.
	r.base = b.herdTool("herd-base", h.base.url, h.base.token, "5s", 0)
	if r.base["ok"] != strconv.Itoa(n) {
		b.fail("herd against the baseline: %s of %d got 200", r.base["ok"], n)
	}
	b.setLatency(fmt.Sprintf("%dms", b.p.upstreamLatencyMS))
	port := freePort()
	env := b.daemonEnv("herd", port, "warn", "1h", "herd")
	before, _ := b.emuStats()
	// Hold the upstream (SIGSTOP the emulator: the kernel still accepts the
	// daemon's connection) so the daemon's first mint cannot be answered
	// before the herd is connected; the herd tool sends SIGCONT right after
	// the release, so every client waits on that one upstream call from its start.
	syscall.Kill(b.emuProc.pid(), syscall.SIGSTOP)
	d := b.startDaemon("herd", port, env)
	tokFile := d.tokenFile("herd")
	for range 200 {
		if st, err := os.Stat(tokFile); err == nil && st.Size() > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d.token("herd") != "" {
		r.out = b.herdTool("herd", d.url("/v1/credentials/herd"), d.token("herd"), "15s", b.emuProc.pid())
	} else {
		b.fail("herd daemon wrote no client token")
		r.out = map[string]string{}
	}
	syscall.Kill(b.emuProc.pid(), syscall.SIGCONT)
	time.Sleep(300 * time.Millisecond)
	after, _ := b.emuStats()
	r.mints = after - before
	if r.mints != 1 {
		b.fail("herd: %d upstream mints, want 1", r.mints)
	}
	if r.out["ok"] != strconv.Itoa(n) {
		b.fail("herd: %s of %d clients got 200 (%s, %s errors)", r.out["ok"], n, r.out["statuses"], r.out["errors"])
	}
	if r.out["distinct_keys"] != "1" {
		b.fail("herd: clients saw %s different keys", r.out["distinct_keys"])
	}
	d.proc.stop()
	return r
}

// herdTool runs test/bench/herd herd and returns its key=value output.
func (b *bench) herdTool(name, url, auth, wait string, contPID int) map[string]string {
	out := b.outPath(name)
	args := []string{b.bin + "/herd", "herd", "-url", url, "-auth", auth, "-n", strconv.Itoa(b.p.herdN),
		"-wait", wait, "-timeout", "20s"}
	if contPID > 0 {
		args = append(args, "-cont-pid", strconv.Itoa(contPID))
	}
	p := b.spawn(nil, out, b.logPath(name+".log"), args...)
	if err := p.wait(60 * time.Second); err != nil {
		b.fail("herd tool (%s) failed: %v: %s", name, err, tail(b.logPath(name+".log"), 3))
	}
	return kvs(readFile(out))
}

// fetchLine is one line of test/bench/fetch or botofetch.py:
// "<unix-ms> <status> <access key id> <latency-µs>".
type fetchLine struct {
	status int
	key    string
}

func fetchLines(files ...string) []fetchLine {
	var out []fetchLine
	for _, f := range files {
		for _, l := range lines(f) {
			w := strings.Fields(l)
			if len(w) < 3 {
				out = append(out, fetchLine{})
				continue
			}
			st, _ := strconv.Atoi(w[1])
			out = append(out, fetchLine{st, w[2]})
		}
	}
	return out
}

func distinctOK(ls []fetchLine) int {
	keys := map[string]bool{}
	for _, l := range ls {
		if l.status == 200 {
			keys[l.key] = true
		}
	}
	return len(keys)
}

func countOK(ls []fetchLine) int {
	n := 0
	for _, l := range ls {
		if l.status == 200 {
			n++
		}
	}
	return n
}

type manyPhase struct {
	mints, keysSeen, fetches int
	elapsed                  time.Duration
	botoFetches, botoOK      int
	botoCalls, botoReqs      int
	botoConns, botoKeys      int
	short, long              map[string]string
}

var botoSummary = regexp.MustCompile(`^botofetch: botocore=\S+ (.*)$`)

func (b *bench) many() *manyPhase {
	p := b.p
	logf("many: %d client processes on %d profiles with 1-minute keys for %ds", p.manyProcs, p.manyProfiles, p.manySecs)
	r := &manyPhase{}
	port := freePort()
	var names []string
	for i := 1; i <= p.manyProfiles; i++ {
		names = append(names, fmt.Sprintf("proc%d", i))
	}
	// The refresh phase's control profile lives 1 h: same daemon, same time, no refresh.
	env := b.daemonEnv("many", port, "warn", "1m", append(names, "short")...)
	env = append(env, "CWCREDS_PROFILES="+strings.Join(append(names, "short", "long"), ","),
		"CWCREDS_PROFILE_LONG_SOURCE=access-key", "CWCREDS_PROFILE_LONG_TOKEN_FILE="+b.apiToken,
		"CWCREDS_PROFILE_LONG_DURATION=1h")
	d := b.startDaemon("many", port, env)
	if !d.ready(15 * time.Second) {
		die("many daemon not ready: %s", tail(d.log(), 3))
	}
	t0 := time.Now()
	dir := filepath.Join(b.work, "many")
	os.MkdirAll(dir, 0o700)
	var loads []*proc
	if p.refresh {
		secs := p.manySecs - 5
		for _, prof := range []string{"short", "long"} {
			loads = append(loads, b.spawn(nil, b.outPath("refresh-"+prof), b.logPath("load-"+prof+".log"),
				b.bin+"/herd", "load", "-url", d.url("/v1/credentials/"+prof), "-auth", d.token(prof),
				"-c", "8", "-d", fmt.Sprintf("%ds", secs), "-max", "3000000"))
		}
	}
	// The processes start spread over the first second or so, as a node's
	// would, and all stop at the same wall-clock time, however late they
	// started: the Go ones fetch every manyEvery on a fresh connection; the
	// boto3 ones (started first: python3 takes a second or so to import boto3)
	// whenever botocore decides to, on the connection botocore keeps.
	until := time.Now().Add(time.Duration(p.manySecs-1) * time.Second).UnixMilli()
	var clients []*proc
	files := map[string][]string{}
	var botoFiles, botoLogs []string
	for n := 1; n <= p.manyProcs; n++ {
		prof := names[n%p.manyProfiles]
		file := filepath.Join(dir, fmt.Sprintf("%s.%d", prof, n))
		files[prof] = append(files[prof], file)
		if n <= p.manyBoto {
			// Only the container-credentials variables, as an application gets them.
			lg := b.logPath(fmt.Sprintf("boto.%d.log", n))
			botoFiles, botoLogs = append(botoFiles, file), append(botoLogs, lg)
			env := []string{"PATH=/usr/bin:/bin", "HOME=" + b.work, "LANG=C.UTF-8", "AWS_EC2_METADATA_DISABLED=true",
				"AWS_CONFIG_FILE=" + filepath.Join(b.work, "no-aws-config"),
				"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(b.work, "no-aws-credentials"),
				"AWS_CONTAINER_CREDENTIALS_FULL_URI=" + d.url("/v1/credentials/"+prof),
				"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=" + d.tokenFile(prof),
				"AWS_CONTAINER_AUTHORIZATION_TOKEN=" + d.token(prof)}
			clients = append(clients, b.spawn(env, file, lg, b.py, filepath.Join(b.root, "test/bench/botofetch.py"),
				strconv.Itoa(int(p.manyEvery/time.Second)), strconv.FormatInt(until, 10), "1000"))
		} else {
			clients = append(clients, b.spawn(nil, file, b.logPath("fetch.log"), b.bin+"/fetch",
				"-url", d.url("/v1/credentials/"+prof), "-token-file", d.tokenFile(prof),
				"-every", p.manyEvery.String(), "-until", strconv.FormatInt(until, 10), "-max", "1000"))
		}
		if n%20 == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	failed := 0
	for _, c := range append(clients, loads...) {
		if c.wait(time.Duration(p.manySecs+60)*time.Second) != nil {
			failed++
		}
	}
	r.elapsed = time.Since(t0)
	if failed > 0 {
		b.fail("many: %d client processes (or load tools) saw a failed fetch", failed)
	}
	var all []fetchLine
	for _, prof := range names {
		all = append(all, fetchLines(files[prof]...)...)
	}
	r.fetches = len(all)
	if ok := countOK(all); ok != r.fetches {
		b.fail("many: %d of %d fetches were not 200", r.fetches-ok, r.fetches)
	}
	_, keys := b.emuStats()
	// One mint per key lifetime: a key refreshes no sooner than (2/3 - 5 %) of
	// its 59-60 s life (36 s), so more mints than that is a profile minting
	// twice a lifetime.
	maxMints := 1 + int(math.Ceil(r.elapsed.Seconds()/36))
	var detail []string
	for _, prof := range names {
		m, seen := keys[prof], distinctOK(fetchLines(files[prof]...))
		r.mints += m
		r.keysSeen += seen
		detail = append(detail, fmt.Sprintf("%s: %d mints, %d keys seen", prof, m, seen))
		// Every key minted for the profile must be a key its processes were served.
		if m != seen {
			b.fail("many: profile %s had %d mints but its clients saw %d keys", prof, m, seen)
		}
		if m > maxMints {
			b.fail("many: profile %s had %d mints in %.0f s, more than one per key lifetime (at most %d)", prof, m, r.elapsed.Seconds(), maxMints)
		}
	}
	logf("many: %d fetches, %d mints (%s)", r.fetches, r.mints, strings.Join(detail, "; "))
	if p.manyBoto > 0 {
		bl := fetchLines(botoFiles...)
		r.botoFetches, r.botoOK, r.botoKeys = len(bl), countOK(bl), distinctOK(bl)
		done := 0
		var other []string
		for _, lg := range botoLogs {
			for _, l := range lines(lg) {
				if m := botoSummary.FindStringSubmatch(l); m != nil {
					done++
					kv := kvs(m[1])
					a, _ := strconv.Atoi(kv["calls"])
					q, _ := strconv.Atoi(kv["requests"])
					c, _ := strconv.Atoi(kv["new_connections"])
					r.botoCalls, r.botoReqs, r.botoConns = r.botoCalls+a, r.botoReqs+q, r.botoConns+c
				} else {
					other = append(other, l)
				}
			}
		}
		if done != p.manyBoto {
			b.fail("many: %d of %d boto3 processes did not finish cleanly: %s", p.manyBoto-done, p.manyBoto, strings.Join(other[max(0, len(other)-2):], " "))
		}
		if r.botoReqs != r.botoFetches {
			b.fail("many: boto3 processes reported %d requests but wrote %d lines", r.botoReqs, r.botoFetches)
		}
		if r.botoFetches == 0 {
			b.fail("many: the boto3 processes fetched nothing")
		}
		logf("many: boto3 sample (%s): %d processes, %d get_frozen_credentials() calls, %d HTTP fetches on %d connections, %d keys seen",
			b.botoVersion, p.manyBoto, r.botoCalls, r.botoReqs, r.botoConns, r.botoKeys)
	}
	if b.quick && r.mints != p.manyProfiles {
		b.fail("many (quick): %d mints for %d profiles in %ds, want one each", r.mints, p.manyProfiles, p.manySecs)
	}
	if p.refresh {
		r.short, r.long = kvs(readFile(b.outPath("refresh-short"))), kvs(readFile(b.outPath("refresh-long")))
		if r.short["failed"] != "0" || r.long["failed"] != "0" {
			b.fail("refresh: failed requests under load (short %s, long %s)", r.short["failed"], r.long["failed"])
		}
		if n, _ := strconv.Atoi(r.short["key_changes"]); n < 1 {
			b.fail("refresh: no background refresh happened during the load")
		}
	}
	d.proc.stop()
	b.setLatency("0s")
	return r
}

type memPhase struct {
	idle, load, healthz, ready map[int]int // KiB, KiB, ms, ms
	baseStart                  int         // ms
}

func (b *bench) memory(h *hitPhase, script string) *memPhase {
	logf("memory: 1 / 100 / 1000 profiles")
	r := &memPhase{idle: map[int]int{}, load: map[int]int{}, healthz: map[int]int{}, ready: map[int]int{}}
	for _, n := range b.p.memProfiles {
		var names []string
		for i := 1; i <= n; i++ {
			names = append(names, fmt.Sprintf("p%04d", i))
		}
		name := fmt.Sprintf("mem%d", n)
		port := freePort()
		// The upstream budget at its maximum: with the default
		// (defaultUpstreamQPS mints a second) n profiles are ready after
		// about n/defaultUpstreamQPS s by design; the rows measure the
		// daemon itself.
		env := append(b.daemonEnv(name, port, "warn", "1h", names...), "CWCREDS_UPSTREAM_QPS=1000")
		t0 := time.Now()
		d := b.startDaemon(name, port, env)
		if !b.wait200(d.url("/healthz"), 20*time.Second, d.proc) {
			die("%s: no /healthz: %s", name, tail(d.log(), 3))
		}
		r.healthz[n] = int(time.Since(t0).Milliseconds())
		if !d.ready(60 * time.Second) {
			die("%s: not ready: %s", name, tail(d.log(), 3))
		}
		r.ready[n] = int(time.Since(t0).Milliseconds())
		time.Sleep(time.Second)
		pid := d.proc.pid()
		r.idle[n] = procKiB(pid, "VmRSS")
		// Load: wrk c64 on one profile (every profile is warm and held in memory),
		// VmRSS sampled at 10 Hz meanwhile.
		peak := 0
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for i := 0; i < b.p.memLoadSecs*10+50; i++ {
				peak = max(peak, procKiB(pid, "VmRSS"))
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		b.wrk(target{name, d.url("/v1/credentials/p0001"), d.token("p0001"), 0}, 64, b.p.memLoadSecs, script)
		close(stop)
		<-sampled
		r.load[n] = max(procKiB(pid, "VmHWM"), peak)
		logf("memory: %d profiles: healthz %d ms, ready %d ms, RSS idle %s MiB, load peak %s MiB", n, r.healthz[n], r.ready[n], mib(r.idle[n]), mib(r.load[n]))
		d.proc.stop()
	}
	// Baseline start-up: time to its first 200.
	addr := filepath.Join(b.work, "base2.addr")
	t0 := time.Now()
	bp := b.spawn(nil, "", "", b.bin+"/baseline", "-listen", fmt.Sprintf("127.0.0.1:%d", freePort()),
		"-body-file", filepath.Join(b.work, "body.json"), "-addr-file", addr)
	a := ""
	for range 500 {
		if a = readFile(addr); a != "" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a == "" || !b.wait200("http://"+a+"/", 10*time.Second, bp) {
		b.fail("second baseline did not start")
	}
	r.baseStart = int(time.Since(t0).Milliseconds())
	bp.stop()
	if kib, ok := r.load[100]; ok && kib > 30*1024 {
		logf("note: RSS under load at 100 profiles is over the 30 MiB target")
	}
	return r
}

// table runs the phases but the soak and prints (with -write, writes) the table.
func (b *bench) table() {
	h := b.hit()
	if b.hitOnly {
		h.baseProc.stop()
		var t strings.Builder
		row := func(cells ...string) { fmt.Fprintf(&t, "| %s |\n", strings.Join(cells, " | ")) }
		row("Measure", "cwcreds", "Baseline", "Ratio / target")
		row("---", "---", "---", "---")
		b.hitRows(h, row)
		fmt.Printf("\ncwcreds benchmark, hit phase only (%s mode, %d cores, response %d bytes, %ds)\n\n%s\n", b.mode, runtime.NumCPU(), b.bodyBytes, int(time.Since(b.start).Seconds()), t.String())
		return
	}
	hd := b.herd(h)
	m := b.many()
	mem := b.memory(h, filepath.Join(b.work, "report.lua"))
	h.baseProc.stop()
	total := int(time.Since(b.start).Seconds())
	p := b.p
	var t strings.Builder
	row := func(cells ...string) { fmt.Fprintf(&t, "| %s |\n", strings.Join(cells, " | ")) }
	row("Measure", "cwcreds", "Baseline", "Ratio / target")
	row("---", "---", "---", "---")
	b.hitRows(h, row)
	row(fmt.Sprintf("Herd: %d cold clients, upstream %d ms: upstream mints", p.herdN, p.upstreamLatencyMS), strconv.Itoa(hd.mints),
		fmt.Sprintf("%d (each calling upstream)", p.herdN), "target 1")
	baseMax, _ := strconv.ParseFloat(hd.base["max_ms"], 64)
	row("Herd: latency from release p50 / p99 / p100",
		fmt.Sprintf("%s / %s / **%s** ms (%s×200)", hd.out["p50_ms"], hd.out["p99_ms"], hd.out["max_ms"], hd.out["ok"]),
		fmt.Sprintf("floor: %d ms upstream + the same %d-request burst on the bare baseline (p50 / p100 %s / %s ms) = %.0f ms",
			p.upstreamLatencyMS, p.herdN, hd.base["p50_ms"], hd.base["max_ms"], float64(p.upstreamLatencyMS)+baseMax),
		fmt.Sprintf("target p100 ≤ %d ms", p.upstreamLatencyMS+50))
	perProfile := float64(m.mints) / float64(p.manyProfiles)
	row(fmt.Sprintf("Many processes: %d processes (%d Go, %d boto3), %d profiles, 1-min keys, %.0f s: upstream mints",
		p.manyProcs, p.manyProcs-p.manyBoto, p.manyBoto, p.manyProfiles, m.elapsed.Seconds()),
		fmt.Sprintf("%d = %.2f per profile: the warm-up + %.2f background refreshes (at ~2/3 of each key's 60 s)", m.mints, perProfile, perProfile-1),
		fmt.Sprintf("%d (one per fetch)", m.fetches),
		fmt.Sprintf("target 1 per key lifetime: each key minted once and served to every process (keys minted = keys processes saw = %d)", m.keysSeen))
	if p.manyBoto > 0 {
		row(fmt.Sprintf("Many processes, the boto3 sample (%s): %d processes, `get_frozen_credentials()` every %s", b.botoVersion, p.manyBoto, p.manyEvery),
			fmt.Sprintf("%d fetches for %d calls + %d first `get_credentials()`, %d×200, on %d connections; %d keys seen", m.botoReqs, m.botoCalls, p.manyBoto, m.botoOK, m.botoConns, m.botoKeys),
			fmt.Sprintf("%d (one per fetch)", m.botoFetches), "botocore refreshes container keys with < 15 min left, so on 1-min keys every call fetches")
	} else {
		row("Many processes, the boto3 sample", "not run (no python3 with boto3)", "", "")
	}
	if p.refresh {
		s, l := m.short, m.long
		row(fmt.Sprintf("Refresh under load (c8, 1-min key, %s refreshes at %s s): p100 within ±1 s of a refresh / p100 overall", s["key_changes"], s["change_at_s"]),
			fmt.Sprintf("%s / %s ms (%s requests)", s["during_refresh_max_ms"], s["max_ms"], s["during_refresh_requests"]),
			fmt.Sprintf("plain hit, same daemon and time (1-h key): p100 %s ms", l["max_ms"]), "equal to the hit p100")
		row("Refresh under load: p50 / p99 / p99.9", fmt.Sprintf("%s / %s / %s ms", s["p50_ms"], s["p99_ms"], s["p999_ms"]),
			fmt.Sprintf("%s / %s / %s ms", l["p50_ms"], l["p99_ms"], l["p999_ms"]), "")
	} else {
		row("Refresh under load", "not run (--quick)", "", "")
	}
	for _, n := range p.memProfiles {
		tg := ""
		if n == 100 {
			tg = "target ≤ 30 MiB"
		}
		row(fmt.Sprintf("RSS with %d profiles: idle / under c64 load (peak)", n), mib(mem.idle[n])+" / "+mib(mem.load[n])+" MiB",
			mib(h.baseRSS)+" / "+mib(h.baseHWM)+" MiB", tg)
	}
	for _, n := range p.memProfiles {
		row(fmt.Sprintf("Start-up, %d profiles (client token files created on %s; `CWCREDS_UPSTREAM_QPS=1000`, the maximum: with the default, %d mints a second, /readyz needs about %.1f s): first /healthz 200 / /readyz 200", n, b.runfs, defaultUpstreamQPS, float64(n)/defaultUpstreamQPS),
			fmt.Sprintf("%d / %d ms", mem.healthz[n], mem.ready[n]), fmt.Sprintf("first 200: %d ms", mem.baseStart), "")
	}
	fmt.Printf("\ncwcreds benchmark (%s mode, %d cores, response %d bytes, %ds)\n\n%s\n", b.mode, runtime.NumCPU(), b.bodyBytes, total, t.String())
	if b.write {
		section := fmt.Sprintf("<!-- table -->\n\nRun on %s (%d s): %s; response body %d bytes.\n\n%s",
			time.Now().UTC().Format("2006-01-02"), total, b.machine(), b.bodyBytes, t.String())
		b.rewrite("<!-- table -->", section, "<!-- soak -->")
		logf("wrote BENCHMARKS.md")
	}
}

// cpuUS formats a CPU time per request.
func cpuUS(u float64) string {
	if math.IsNaN(u) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f µs", u)
}

// hitRows writes the hit phase's rows.
func (b *bench) hitRows(h *hitPhase, row func(...string)) {
	for _, c := range b.p.hitConns {
		target := ""
		if c == 64 {
			target = "; target ≥ 0.8"
		}
		row(fmt.Sprintf("Cache hit, %d conn: req/s", c), krps(h.stat("daemon", c, "rps")), krps(h.stat("baseline", c, "rps")),
			fmt.Sprintf("**%s** (rounds: %s)%s", h.ratio("daemon", c), h.roundRatios("daemon", c), target))
		row(fmt.Sprintf("Cache hit, %d conn: server CPU per request", c), cpuUS(h.stat("daemon", c, "cpu_us")), cpuUS(h.stat("baseline", c, "cpu_us")),
			"baseline ÷ cwcreds: "+h.cpuRatio("daemon", "baseline", c))
		lat := func(tg string) string {
			return us(h.stat(tg, c, "p50")) + " / " + us(h.stat(tg, c, "p99")) + " / " + us(h.stat(tg, c, "p999"))
		}
		row(fmt.Sprintf("Cache hit, %d conn: p50 / p99 / p99.9", c), lat("daemon"), lat("baseline"), "")
	}
	short := func(tg string) string {
		return fmt.Sprintf("%s, %s / %s", krps(h.stat(tg, 64, "rps")), us(h.stat(tg, 64, "p50")), us(h.stat(tg, 64, "p99")))
	}
	aud := func(tg string) string {
		a := h.audits[tg]
		if a == nil {
			return "not checked"
		}
		return fmt.Sprintf("%d audit lines (%s) for %.0f requests", a.lines, a.detail, a.reqs)
	}
	row(fmt.Sprintf("Cache hit with the audit trail on (the default `info`; grant and summary lines, to a file: %s), 64 conn: req/s, p50 / p99", aud("audit")),
		short("audit"), short("baseline"), fmt.Sprintf("**%s** (rounds: %s); target ≥ 0.90", h.ratio("audit", 64), h.roundRatios("audit", 64)))
	if h.peer {
		row(fmt.Sprintf("Cache hit with the peer-uid check on (ALLOWED_UIDS; uid looked up once per connection) at the default `info` (audit on: %s), 64 conn: req/s, p50 / p99", aud("peer")),
			short("peer"), short("baseline"), fmt.Sprintf("**%s** (rounds: %s); target ≥ 0.85", h.ratio("peer", 64), h.roundRatios("peer", 64)))
	} else {
		row("Cache hit with the peer-uid check on", "not available in this build", "", "")
	}
	own, ownRounds := h.ownRatio("workload", "baseline-wl", "audit", "baseline", 64)
	row(fmt.Sprintf("Cache hit of a workload identity (source `workload-oidc`, SHARE=token: the caller's own %d-byte OIDC token as Authorization, hashed per request) at the default `info` (audit on: %s), 64 conn: req/s, p50 / p99", h.wlTokenLen, aud("workload")),
		short("workload"), short("baseline")+"; sent the workload's request: "+short("baseline-wl"),
		fmt.Sprintf("÷ the operator profile (the audit row, same rounds): **%s** (rounds: %s); the bigger request alone, bare ÷ bare: %s (rounds: %s); cwcreds' own part, (workload ÷ bare with its request) ÷ (operator ÷ bare): **%s** (rounds: %s); target ≥ 0.90 of the operator profile",
			h.ratioTo("workload", "audit", 64), h.roundRatiosTo("workload", "audit", 64),
			h.ratioTo("baseline-wl", "baseline", 64), h.roundRatiosTo("baseline-wl", "baseline", 64), own, ownRounds))
	cpuTargets := []string{"audit", "peer", "workload"}
	if !h.peer {
		cpuTargets = []string{"audit", "workload"}
	}
	var cpus []string
	for _, tg := range cpuTargets {
		cpus = append(cpus, tg+" "+cpuUS(h.stat(tg, 64, "cpu_us")))
	}
	row("Server CPU per request at 64 conn, the rows above (the server process's CPU time ÷ the requests wrk counted, median of rounds: hardly moved by the machine's other load, unlike req/s): audit = the default `info`, peer = peer-uid check at `info`, workload",
		strings.Join(cpus, ", "), "bare "+cpuUS(h.stat("baseline", 64, "cpu_us"))+"; sent the workload's request "+cpuUS(h.stat("baseline-wl", 64, "cpu_us")),
		fmt.Sprintf("bare ÷ default: **%s**; bare ÷ peer-uid: **%s**; operator ÷ workload: **%s**; bare with the workload's request ÷ workload: %s",
			h.cpuRatio("audit", "baseline", 64), h.cpuRatio("peer", "baseline", 64), h.cpuRatio("workload", "audit", 64), h.cpuRatio("workload", "baseline-wl", 64)))
	if b.otherBin != "" {
		row(fmt.Sprintf("The other build (`-compare %s`), defaults (`info`), 64 conn: req/s, p50 / p99; server CPU per request", b.otherBin),
			short("other")+"; "+cpuUS(h.stat("other", 64, "cpu_us")), "this build: "+short("audit")+"; "+cpuUS(h.stat("audit", 64, "cpu_us")),
			fmt.Sprintf("req/s this ÷ other: %s (rounds: %s); CPU other ÷ this: %s", h.ratioTo("audit", "other", 64), h.roundRatiosTo("audit", "other", 64), h.cpuRatio("audit", "other", 64)))
	}
	faster := "wrk"
	if h.genGo > h.genWrk {
		faster = "the Go generator"
	}
	row("Load generator check: the bare baseline, 64 conn, one run each: wrk -t2 / Go (`test/bench/herd load`, net/http clients) req/s",
		krps(h.genWrk)+" / "+krps(h.genGo), "", fmt.Sprintf("%s drives it harder (%.2f×); the hit figures use wrk", faster, math.Max(h.genWrk, h.genGo)/math.Min(h.genWrk, h.genGo)))
}

// defaultUpstreamQPS is CWCREDS_UPSTREAM_QPS's default (config), for the
// start-up rows' note on what the default budget would add.
const defaultUpstreamQPS = 50
