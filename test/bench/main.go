// Command bench is scripts/bench: how fast cwcreds serves keys, measured
// against a bare net/http baseline in the same run, on loopback only. It
// builds the daemon, test/emulator and the helpers beside it
// (test/bench/{baseline,fetch,herd}), runs the phases, checks every result
// for correctness and prints the Markdown tables of BENCHMARKS.md (with
// -write, rewrites them there). scripts/bench is a thin wrapper; its --help
// describes the phases and the flags.
//
// Every server listens on 127.0.0.1; every load loop is bounded in count and
// time; every process started here is killed by PID at exit, and a watchdog
// bounds the whole run. The checks are about correctness only (errors, mints,
// keys seen, audit lines), never a timing threshold: the figures are for
// BENCHMARKS.md.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// params are the sizes of one run (quick or full).
type params struct {
	rounds, hitSecs, warmSecs, herdN         int
	manyProcs, manyBoto, manyProfiles        int
	manySecs                                 int
	manyEvery                                time.Duration
	memProfiles                              []int
	memLoadSecs                              int
	refresh                                  bool
	limit                                    time.Duration
	soakSecs, soakEvery, soakProfiles, soakC int
	soakTrickle                              time.Duration
	soakLoadSlack, soakIdleSlack             int
	soakMemAbs                               float64
	soakMemRel                               float64
	upstreamLatencyMS                        int
	hitConns                                 []int
}

func paramsFor(quick, soak bool) params {
	p := params{
		herdN: 1000, memProfiles: []int{1, 100, 1000}, soakProfiles: 4, soakC: 64,
		soakTrickle: 100 * time.Millisecond, soakLoadSlack: 12, soakIdleSlack: 2,
		soakMemAbs: 4 << 20, soakMemRel: 0.10, upstreamLatencyMS: 200, hitConns: []int{1, 16, 64},
	}
	if quick {
		p.rounds, p.hitSecs, p.warmSecs = 1, 1, 0
		p.manyProcs, p.manyBoto, p.manyProfiles, p.manySecs, p.manyEvery = 40, 4, 2, 8, time.Second
		p.memLoadSecs, p.refresh, p.limit = 1, false, 110*time.Second
		p.soakSecs, p.soakEvery = 18, 2
	} else {
		p.rounds, p.hitSecs, p.warmSecs = 5, 3, 1
		p.manyProcs, p.manyBoto, p.manyProfiles, p.manySecs, p.manyEvery = 200, 20, 4, 130, 2*time.Second
		p.memLoadSecs, p.refresh, p.limit = 3, true, 600*time.Second
		p.soakSecs, p.soakEvery = 60, 5
	}
	if soak {
		p.limit = time.Duration(p.soakSecs+180) * time.Second
	}
	return p
}

type fatal struct{ msg string }

// bench is one run's state.
type bench struct {
	p               params
	quick, write    bool
	hitOnly         bool
	otherBin        string // -compare
	mode            string
	root, work, run string
	runfs, bin      string
	emu             string
	issuer          string // the emulator's own OIDC issuer (its URL, the iss of its tokens)
	emuProc         *proc
	start           time.Time
	mu              sync.Mutex
	procs           []*proc
	fails           []string
	cleaned         bool
	bodyBytes       int
	py, botoVersion string
	apiToken        string
	httpc           *http.Client
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func (b *bench) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	logf("FAIL: %s", msg)
	b.mu.Lock()
	b.fails = append(b.fails, msg)
	b.mu.Unlock()
}

func die(format string, a ...any) { panic(fatal{fmt.Sprintf(format, a...)}) }

func main() {
	quick := flag.Bool("quick", false, "smoke run for CI: same phases, shorter, no refresh phase")
	soak := flag.Bool("soak", false, "only the soak")
	hitOnly := flag.Bool("hit", false, "only the hit phase (full rounds), printing its rows; with -write nothing is written")
	other := flag.String("compare", "", "with -hit: also measure this cwcreds binary (another build) at 64 connections with the defaults, beside this tree's")
	write := flag.Bool("write", false, "rewrite BENCHMARKS.md (the table, or with -soak its soak section)")
	root := flag.String("root", ".", "the repository root")
	flag.Parse()
	if *write && *quick {
		fmt.Fprintln(os.Stderr, "bench: --write needs the full mode")
		os.Exit(2)
	}
	if *hitOnly && (*write || *soak) || *other != "" && !*hitOnly {
		fmt.Fprintln(os.Stderr, "bench: --hit takes neither --write nor --soak; --compare needs --hit")
		os.Exit(2)
	}
	b := &bench{p: paramsFor(*quick, *soak), quick: *quick, write: *write, hitOnly: *hitOnly, otherBin: *other, mode: "full", start: time.Now(),
		httpc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}}
	if *quick {
		b.mode = "quick"
	}
	var err error
	if b.root, err = filepath.Abs(*root); err != nil {
		fmt.Println("bench: FAILED:", err)
		os.Exit(1)
	}
	// The watchdog and the signals end the run the same way: every process killed.
	time.AfterFunc(b.p.limit, func() {
		logf("FATAL: over the %s limit; stopping", b.p.limit)
		b.cleanup()
		fmt.Printf("bench: FAILED: over the %s limit\n", b.p.limit)
		os.Exit(1)
	})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		b.cleanup()
		fmt.Println("bench: FAILED: interrupted")
		os.Exit(1)
	}()
	code := b.main(*soak)
	os.Exit(code)
}

func (b *bench) main(soak bool) (code int) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				b.cleanup()
				panic(r)
			}
			logf("FATAL: %s", f.msg)
			fmt.Printf("bench: FAILED: %s\n", f.msg)
			code = 1
		}
		b.cleanup()
	}()
	b.setup(soak)
	if soak {
		b.soak()
	} else {
		b.table()
	}
	if len(b.fails) > 0 {
		fmt.Printf("bench: FAILED: %s\n", strings.Join(b.fails, " "))
		return 1
	}
	fmt.Println("bench: ok")
	return 0
}

// ------------------------------------------------------------- processes ---

// proc is a process started here; its Wait runs once, in the background.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to end, killing it after d.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("killed after %s", d)
	}
	return p.err
}

// stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.wait(10 * time.Second)
}

// spawn starts argv with env (nil: this environment) and stdout/stderr to the
// named files ("" discards).
func (b *bench) spawn(env []string, stdout, stderr string, argv ...string) *proc {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	open := func(name string) *os.File {
		if name == "" {
			return nil
		}
		f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			die("%v", err)
		}
		return f
	}
	o, e := open(stdout), open(stderr)
	if o != nil {
		cmd.Stdout = o
		defer o.Close()
	}
	if e != nil {
		cmd.Stderr = e
		defer e.Close()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cleaned {
		die("stopping")
	}
	if err := cmd.Start(); err != nil {
		die("starting %s: %v", filepath.Base(argv[0]), err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	b.procs = append(b.procs, p)
	return p
}

func (b *bench) cleanup() {
	b.mu.Lock()
	if b.cleaned {
		b.mu.Unlock()
		return
	}
	b.cleaned = true
	procs := b.procs
	b.mu.Unlock()
	if b.emuProc != nil && !b.emuProc.exited() {
		_ = syscall.Kill(b.emuProc.pid(), syscall.SIGCONT)
	}
	for _, p := range procs {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		_ = p.wait(5 * time.Second)
	}
	if strings.HasPrefix(b.run, "/dev/shm/cwcreds-bench.") {
		os.RemoveAll(b.run)
	}
	if b.work != "" {
		os.RemoveAll(b.work)
	}
}

// ----------------------------------------------------------------- helpers ---

func (b *bench) status(url string) int {
	resp, err := b.httpc.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// wait200 polls url every 10 ms until it answers 200 (false after d, or once p exits).
func (b *bench) wait200(url string, d time.Duration, p *proc) bool {
	end := time.Now().Add(d)
	for {
		if b.status(url) == 200 {
			return true
		}
		if time.Now().After(end) || (p != nil && p.exited()) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePort: a loopback port nothing listens on, below the ephemeral range (the
// many short client connections must not take a daemon's port first).
func freePort() int {
	low := 32768
	if s, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(s)); len(f) > 0 {
			low, _ = strconv.Atoi(f[0])
		}
	}
	span := 1000
	if low > 12000 {
		span = low - 11000
	}
	for range 50 {
		p := 10000 + mrand.IntN(span)
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			ln.Close()
			return p
		}
	}
	die("no free port")
	return 0
}

// procKiB reads a "Vm...:" line of /proc/PID/status, in KiB (0 if gone).
func procKiB(pid int, field string) int {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(s), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}

func mib(kib int) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }

// kvs parses "k=v" words (any whitespace between them).
func kvs(s string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(s) {
		if k, v, ok := strings.Cut(w, "="); ok {
			if _, dup := m[k]; !dup {
				m[k] = v
			}
		}
	}
	return m
}

func num(m map[string]string, k string) float64 {
	v, err := strconv.ParseFloat(m[k], 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

func median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// us formats microseconds as the tables do.
func us(u float64) string {
	switch {
	case math.IsNaN(u):
		return "n/a"
	case u < 1000:
		return fmt.Sprintf("%d µs", int(u))
	default:
		return fmt.Sprintf("%.2f ms", u/1000)
	}
}

func krps(r float64) string {
	if math.IsNaN(r) {
		return "n/a"
	}
	return fmt.Sprintf("%.1fk", r/1000)
}

func readFile(name string) string {
	s, _ := os.ReadFile(name)
	return string(s)
}

func tail(name string, n int) string {
	lines := strings.Split(strings.TrimRight(readFile(name), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " ")
}

// ------------------------------------------------------------------- setup ---

func aptInstall(work string, pkgs ...string) error {
	if os.Getuid() != 0 {
		return errors.New("not root")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return err
	}
	run := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		os.WriteFile(filepath.Join(work, "apt.log"), out, 0o600)
		return err
	}
	inst := append([]string{"install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=60"}, pkgs...)
	if run(inst...) == nil {
		return nil
	}
	if err := run("update", "-qq"); err != nil {
		return err
	}
	return run(inst...)
}

func (b *bench) setup(soak bool) {
	var err error
	if b.work, err = os.MkdirTemp("", "cwcreds-bench."); err != nil {
		die("%v", err)
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		logf("apt-get install wrk")
		if err := aptInstall(b.work, "wrk"); err != nil {
			die("wrk is missing (apt-get install wrk): %v", err)
		}
	}
	if !soak && b.p.manyBoto > 0 {
		b.findBoto()
	}
	b.bin = filepath.Join(b.work, "bin")
	for _, d := range []string{b.bin, filepath.Join(b.work, "logs"), filepath.Join(b.work, "out")} {
		os.MkdirAll(d, 0o700)
	}
	// Client token files go to a tmpfs, as /run/cwcreds is on a node (their
	// creation fsyncs, which on a disk would dominate start-up with many profiles).
	b.runfs = "disk"
	if d, err := os.MkdirTemp("/dev/shm", "cwcreds-bench."); err == nil {
		b.run, b.runfs = d, "tmpfs"
	} else {
		b.run = filepath.Join(b.work, "run")
		os.MkdirAll(b.run, 0o700)
	}
	logf("building cwcreds and test/bench helpers")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.bin+"/", "./cmd/cwcreds", "./test/emulator",
		"./test/bench/baseline", "./test/bench/herd", "./test/bench/fetch")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		die("go build failed: %v: %s", err, out)
	}
	// Mode 0600, as an upstream token file must be (the daemon refuses one others can read).
	rb := make([]byte, 16)
	rand.Read(rb)
	b.apiToken = filepath.Join(b.work, "api-token")
	os.WriteFile(b.apiToken, []byte("CW-BENCH-"+hex.EncodeToString(rb)), 0o600)
	urlFile, issFile := filepath.Join(b.work, "emu.url"), filepath.Join(b.work, "emu.issuer")
	b.emuProc = b.spawn(nil, b.logPath("emulator.out"), b.logPath("emulator.log"), b.bin+"/emulator",
		"--listen", "127.0.0.1:0", "--url-file", urlFile, "--api-token-file", b.apiToken, "--org-id", "cw-bench",
		"--oidc-issuer-file", issFile)
	for range 100 {
		if s, i := readFile(urlFile), readFile(issFile); s != "" && i != "" {
			b.emu, b.issuer = strings.TrimSpace(s), strings.TrimSpace(i)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.emu == "" {
		die("emulator did not start: %s", tail(b.logPath("emulator.log"), 3))
	}
	if !b.wait200(b.emu+"/_emulator/stats", 10*time.Second, b.emuProc) {
		die("emulator not answering")
	}
}

// findBoto: Debian's python3-boto3 (installed with apt when root), else a
// python3 on PATH that has boto3 (resolved to the real interpreter).
func (b *bench) findBoto() {
	has := func(py string) bool { return exec.Command(py, "-c", "import boto3").Run() == nil }
	if !has("/usr/bin/python3") && os.Getuid() == 0 {
		logf("apt-get install python3-boto3")
		_ = aptInstall(b.work, "python3-boto3")
	}
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, py := range cands {
		if has(py) {
			out, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
			if err == nil {
				b.py = strings.TrimSpace(string(out))
				break
			}
		}
	}
	if b.py == "" {
		if os.Getuid() == 0 {
			b.fail("many: no python3 with boto3 (apt-get install python3-boto3 failed)")
		} else {
			logf("note: no python3 with boto3 and not root to apt-get install python3-boto3: the many phase runs Go clients only")
		}
		b.p.manyBoto = 0
		return
	}
	out, _ := exec.Command(b.py, "-c", `import boto3, botocore, sys; print("boto3 %s, botocore %s, Python %s" % (boto3.__version__, botocore.__version__, sys.version.split()[0]))`).Output()
	b.botoVersion = strings.TrimSpace(string(out))
}

func (b *bench) logPath(name string) string { return filepath.Join(b.work, "logs", name) }
func (b *bench) outPath(name string) string { return filepath.Join(b.work, "out", name) }

func (b *bench) setLatency(d string) {
	req, _ := http.NewRequest(http.MethodPut, b.emu+"/_emulator/latency", strings.NewReader(`{"latency":"`+d+`"}`))
	resp, err := b.httpc.Do(req)
	if err != nil {
		die("setting emulator latency: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		die("setting emulator latency: %s", resp.Status)
	}
}

// emuStats: the emulator's mint count, and its keys per profile (each key
// carries the cwcreds-profile attribute).
func (b *bench) emuStats() (mints int, keys map[string]int) {
	get := func(path string, v any) {
		resp, err := b.httpc.Get(b.emu + path)
		if err != nil {
			die("emulator %s: %v", path, err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			die("emulator %s: %v", path, err)
		}
	}
	var st struct {
		Mints map[string]int `json:"mints"`
	}
	get("/_emulator/stats", &st)
	for _, v := range st.Mints {
		mints += v
	}
	var ks struct {
		Keys []struct {
			Attributes map[string]string `json:"attributes"`
		} `json:"keys"`
	}
	get("/_emulator/keys", &ks)
	keys = map[string]int{}
	for _, k := range ks.Keys {
		keys[k.Attributes["cwcreds-profile"]]++
	}
	return mints, keys
}

// daemon is one `cwcreds serve`, configured only by CWCREDS_* variables.
type daemon struct {
	name string
	port int
	proc *proc
	b    *bench
}

func (d *daemon) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", d.port, path) }
func (d *daemon) log() string            { return d.b.logPath(d.name + ".log") }

func (d *daemon) token(profile string) string {
	return strings.TrimSpace(readFile(filepath.Join(d.b.run, d.name, profile+".token")))
}

func (d *daemon) tokenFile(profile string) string {
	return filepath.Join(d.b.run, d.name, profile+".token")
}

// daemonEnv is the environment of a daemon serving profiles with keys of duration dur.
func (b *bench) daemonEnv(name string, port int, level, dur string, profiles ...string) []string {
	os.MkdirAll(filepath.Join(b.run, name), 0o700)
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + b.work,
		fmt.Sprintf("CWCREDS_LISTEN_ADDR=127.0.0.1:%d", port),
		"CWCREDS_API_URL=" + b.emu,
		"CWCREDS_RUNTIME_DIR=" + filepath.Join(b.run, name),
		"CWCREDS_NODE_NAME=bench-node",
		"CWCREDS_LOG_LEVEL=" + level,
		"CWCREDS_PROFILES=" + strings.Join(profiles, ","),
	}
	for _, p := range profiles {
		up := strings.ReplaceAll(strings.ToUpper(p), "-", "_")
		env = append(env, "CWCREDS_PROFILE_"+up+"_SOURCE=access-key",
			"CWCREDS_PROFILE_"+up+"_TOKEN_FILE="+b.apiToken,
			"CWCREDS_PROFILE_"+up+"_DURATION="+dur)
	}
	return env
}

// workloadEnv is the environment of a daemon serving workload-oidc
// profiles (SHARE=token, the default; 1-hour keys, the default) that trust
// the emulator's OIDC issuer.
func (b *bench) workloadEnv(name string, port int, level string, profiles ...string) []string {
	env := b.daemonEnv(name, port, level, "1h")
	env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, "CWCREDS_PROFILES=") })
	env = append(env, "CWCREDS_PROFILES="+strings.Join(profiles, ","))
	for _, p := range profiles {
		up := "CWCREDS_PROFILE_" + strings.ReplaceAll(strings.ToUpper(p), "-", "_") + "_"
		env = append(env, up+"SOURCE=workload-oidc", up+"ORG_ID=cw-bench", up+"ISSUERS="+b.issuer)
	}
	return env
}

// oidcToken has the emulator's issuer sign a Kubernetes-style projected
// service-account token (audience https://coreweave.com/iam) for subject.
func (b *bench) oidcToken(subject, namespace, sa, pod string, ttlSeconds int) string {
	req, _ := json.Marshal(map[string]any{"subject": subject, "namespace": namespace, "serviceAccount": sa, "pod": pod, "ttlSeconds": ttlSeconds})
	resp, err := b.httpc.Post(b.emu+"/_emulator/oidc-tokens", "application/json", strings.NewReader(string(req)))
	if err != nil {
		die("emulator oidc-tokens: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.Token == "" {
		die("emulator oidc-tokens: %s %v", resp.Status, err)
	}
	return out.Token
}

func (b *bench) startDaemon(name string, port int, env []string) *daemon {
	d := &daemon{name: name, port: port, b: b}
	bin := b.bin + "/cwcreds"
	if name == "other" {
		bin = b.otherBin
	}
	d.proc = b.spawn(env, b.logPath(name+".out"), d.log(), bin, "serve")
	return d
}

func (d *daemon) ready(within time.Duration) bool {
	return d.b.wait200(d.url("/readyz"), within, d.proc)
}

// ------------------------------------------------------------------ output ---

func (b *bench) cpuModel() string {
	for l := range strings.SplitSeq(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func (b *bench) machine() string {
	uname, _ := exec.Command("uname", "-r").Output()
	wrkv, _ := exec.Command("wrk", "-v").CombinedOutput() // wrk -v exits 1
	wf := strings.Fields(strings.SplitN(string(wrkv), "\n", 2)[0])
	if len(wf) > 2 {
		wf = wf[:2]
	}
	gov, _ := exec.Command("go", "env", "GOVERSION").Output()
	return fmt.Sprintf("%d cores, %s, Linux %s, %s, %s", runtime.NumCPU(), b.cpuModel(),
		strings.TrimSpace(string(uname)), strings.TrimSpace(string(gov)), strings.Join(wf, " "))
}

// rewrite replaces BENCHMARKS.md from the marker line on with section, keeping
// what follows keepFrom (if that marker is there).
func (b *bench) rewrite(marker, section, keepFrom string) {
	path := filepath.Join(b.root, "BENCHMARKS.md")
	old := readFile(path)
	if !strings.Contains(old, "\n<!-- table -->\n") {
		die("BENCHMARKS.md has no '<!-- table -->' marker line")
	}
	head := old
	if i := strings.Index(old, "\n"+marker+"\n"); i >= 0 {
		head = old[:i+1]
	}
	var kept string
	if keepFrom != "" {
		if i := strings.Index(old, "\n"+keepFrom+"\n"); i >= 0 {
			kept = "\n" + old[i+1:]
		}
	}
	if err := os.WriteFile(path, []byte(head+section+kept), 0o644); err != nil {
		die("%v", err)
	}
}

// lineReader scans a file's lines.
func lines(name string) []string {
	f, err := os.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
