// Command herd is scripts/bench's Go load tool (started by test/bench), loopback only. Subcommands:
//
//	herd  -url U -auth T -n 1000     open N keep-alive connections (each does
//	                                 GET /healthz first), then release N credential
//	                                 requests at once; latency is from the release
//	load  -url U -auth T -c 16 -d 30s  closed-loop keep-alive load; per-request
//	                                 latency and served key id, so the latency of
//	                                 requests around each key change (a background
//	                                 refresh) can be told apart
//
// Output is "key=value" lines, which test/bench (scripts/bench) reads.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		die("usage: herd herd|load [flags]")
	}
	switch os.Args[1] {
	case "herd":
		herd(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		die("unknown subcommand " + os.Args[1])
	}
}

func die(msg string) {
	fmt.Fprintln(os.Stderr, "herd:", msg)
	os.Exit(2)
}

func loopbackURL(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" {
		die("-url must be http://127.0.0.1:PORT/...")
	}
	return u
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/1e6) }

func herd(args []string) {
	fs := flag.NewFlagSet("herd", flag.ExitOnError)
	raw := fs.String("url", "", "credentials URL")
	auth := fs.String("auth", "", "Authorization header value")
	n := fs.Int("n", 1000, "clients")
	wait := fs.Duration("wait", 10*time.Second, "how long to wait for the server to accept")
	timeout := fs.Duration("timeout", 10*time.Second, "per-request timeout")
	contPID := fs.Int("cont-pid", 0, "send SIGCONT to this (stopped) process right after the release: the upstream emulator, held so the herd meets a mint that has not been answered yet")
	fs.Parse(args)
	u := loopbackURL(*raw)
	deadline := time.Now().Add(*wait)
	var first net.Conn
	for {
		c, err := net.DialTimeout("tcp", u.Host, time.Second)
		if err == nil {
			first = c
			break
		}
		if time.Now().After(deadline) {
			die("server never accepted: " + err.Error())
		}
		time.Sleep(5 * time.Millisecond)
	}
	firstDial := time.Now()
	pre := fmt.Sprintf("GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", u.Host)
	reqText := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n\r\n", u.RequestURI(), u.Host, *auth)

	type result struct {
		status int
		lat    time.Duration
		key    string
		err    error
	}
	results := make([]result, *n)
	var ready, done sync.WaitGroup
	release := make(chan struct{})
	var t0 time.Time
	for i := range *n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			var c net.Conn
			var err error
			if i == 0 {
				c = first
			} else {
				c, err = net.DialTimeout("tcp", u.Host, 5*time.Second)
			}
			var br *bufio.Reader
			if err == nil {
				defer c.Close()
				c.SetDeadline(time.Now().Add(*wait + *timeout))
				br = bufio.NewReader(c)
				if _, err = io.WriteString(c, pre); err == nil {
					var resp *http.Response
					if resp, err = http.ReadResponse(br, nil); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}
			ready.Done()
			<-release
			if err != nil {
				results[i].err = err
				return
			}
			c.SetDeadline(time.Now().Add(*timeout))
			if _, err = io.WriteString(c, reqText); err != nil {
				results[i].err = err
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				results[i].err = err
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results[i] = result{status: resp.StatusCode, lat: time.Since(t0), key: keyID(body)}
		}()
	}
	ready.Wait()
	preconnect := time.Since(firstDial)
	t0 = time.Now()
	close(release)
	if *contPID > 0 {
		if err := syscall.Kill(*contPID, syscall.SIGCONT); err != nil {
			fmt.Fprintln(os.Stderr, "herd: SIGCONT:", err)
		}
	}
	done.Wait()
	var lats []time.Duration
	statuses := map[string]int{}
	keys := map[string]bool{}
	errs := 0
	for _, r := range results {
		if r.err != nil {
			errs++
			continue
		}
		statuses[fmt.Sprint(r.status)]++
		if r.status == 200 {
			lats = append(lats, r.lat)
			keys[r.key] = true
		}
	}
	slices.Sort(lats)
	var st []string
	for k, v := range statuses {
		st = append(st, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(st)
	fmt.Printf("n=%d\nok=%d\nerrors=%d\nstatuses=%s\ndistinct_keys=%d\npreconnect_ms=%s\n", *n, len(lats), errs, strings.Join(st, ","), len(keys), ms(preconnect))
	fmt.Printf("p50_ms=%s\np90_ms=%s\np99_ms=%s\nmax_ms=%s\nmin_ms=%s\n", ms(pct(lats, 50)), ms(pct(lats, 90)), ms(pct(lats, 99)), ms(pct(lats, 100)), ms(pct(lats, 0)))
}

var akPrefix = []byte(`"AccessKeyId":"`)

func keyID(body []byte) string {
	i := bytes.Index(body, akPrefix)
	if i < 0 {
		return ""
	}
	rest := body[i+len(akPrefix):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	raw := fs.String("url", "", "credentials URL")
	auth := fs.String("auth", "", "Authorization header value")
	conns := fs.Int("c", 16, "connections")
	dur := fs.Duration("d", 10*time.Second, "duration")
	maxReq := fs.Int("max", 5_000_000, "at most this many requests in all")
	window := fs.Duration("window", time.Second, "a request within this of a key change counts as 'during refresh'")
	fs.Parse(args)
	u := loopbackURL(*raw)
	tr := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns, Proxy: nil}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	type sample struct {
		at  time.Duration // start, from t0
		lat time.Duration
		key string
		ok  bool
	}
	per := make([][]sample, *conns)
	var wg sync.WaitGroup
	var mu sync.Mutex
	budget := *maxReq
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if budget <= 0 {
			return false
		}
		budget--
		return true
	}
	t0 := time.Now()
	end := t0.Add(*dur)
	for i := range *conns {
		wg.Go(func() {
			buf := make([]byte, 0, 512)
			lastKey := ""
			for time.Now().Before(end) && take() {
				req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
				req.Header["Authorization"] = []string{*auth}
				s := time.Now()
				resp, err := client.Do(req)
				smp := sample{at: s.Sub(t0)}
				if err == nil {
					b := bytes.NewBuffer(buf[:0])
					io.Copy(b, resp.Body)
					resp.Body.Close()
					smp.ok = resp.StatusCode == 200
					k := keyID(b.Bytes())
					if k != lastKey { // keep key ids only at changes, to save memory
						smp.key, lastKey = k, k
					}
				}
				smp.lat = time.Since(s)
				per[i] = append(per[i], smp)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	var all []sample
	for _, p := range per {
		all = append(all, p...)
	}
	// Key changes: the first time any connection saw each new key id.
	firstSeen := map[string]time.Duration{}
	for _, s := range all {
		if s.key != "" {
			if t, ok := firstSeen[s.key]; !ok || s.at < t {
				firstSeen[s.key] = s.at
			}
		}
	}
	var changes []time.Duration
	for _, t := range firstSeen {
		changes = append(changes, t)
	}
	slices.Sort(changes)
	if len(changes) > 0 {
		changes = changes[1:] // the first key is not a change
	}
	var lats, during []time.Duration
	fails := 0
	for _, s := range all {
		if !s.ok {
			fails++
		}
		lats = append(lats, s.lat)
		for _, c := range changes {
			if s.at+s.lat >= c-*window && s.at <= c+*window {
				during = append(during, s.lat)
				break
			}
		}
	}
	slices.Sort(lats)
	slices.Sort(during)
	fmt.Printf("requests=%d\nfailed=%d\nrps=%.0f\np50_ms=%s\np99_ms=%s\np999_ms=%s\nmax_ms=%s\n",
		len(all), fails, float64(len(all))/elapsed.Seconds(), ms(pct(lats, 50)), ms(pct(lats, 99)), ms(pct(lats, 99.9)), ms(pct(lats, 100)))
	var ch []string
	for _, c := range changes {
		ch = append(ch, fmt.Sprintf("%.1f", c.Seconds()))
	}
	fmt.Printf("key_changes=%d\nchange_at_s=%s\nduring_refresh_requests=%d\nduring_refresh_p99_ms=%s\nduring_refresh_max_ms=%s\n",
		len(changes), strings.Join(ch, ","), len(during), ms(pct(during, 99)), ms(pct(during, 100)))
}
