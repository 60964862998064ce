// Command fetch is the tiny client scripts/bench starts as many separate
// processes: like an SDK in a long-running process, it fetches its profile's
// key from the container-credentials endpoint every -every for -for, on a
// fresh connection each time, and prints one line per fetch:
// "<unix-ms> <status> <access key id> <latency-µs>". With -until it stops at
// that wall-clock time instead, so processes started over several seconds
// on a busy machine all end together.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	url := flag.String("url", "", "credentials URL (127.0.0.1 only)")
	tokenFile := flag.String("token-file", "", "client token file")
	every := flag.Duration("every", 2*time.Second, "interval between fetches")
	dur := flag.Duration("for", 10*time.Second, "how long to keep fetching")
	max := flag.Int("max", 1000, "at most this many fetches")
	until := flag.Int64("until", 0, "if set, fetch until this Unix time in milliseconds instead of for -for")
	flag.Parse()
	if !strings.HasPrefix(*url, "http://127.0.0.1:") {
		fmt.Fprintln(os.Stderr, "fetch: -url must be http://127.0.0.1:PORT/...")
		os.Exit(2)
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetch:", err)
		os.Exit(2)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	end := time.Now().Add(*dur)
	if *until > 0 {
		end = time.UnixMilli(*until)
	}
	fails := 0
	for i := 0; i < *max && time.Now().Before(end); i++ {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, *url, nil)
		req.Header.Set("Authorization", strings.TrimSpace(string(tok)))
		resp, err := client.Do(req)
		id := "-"
		status := 0
		if err == nil {
			status = resp.StatusCode
			var body struct{ AccessKeyId string }
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if json.Unmarshal(b, &body) == nil && body.AccessKeyId != "" {
				id = body.AccessKeyId
			}
		}
		if status != http.StatusOK {
			fails++
		}
		fmt.Printf("%d %d %s %d\n", start.UnixMilli(), status, id, time.Since(start).Microseconds())
		if next := start.Add(*every); time.Now().Before(end) {
			time.Sleep(time.Until(next))
		}
	}
	if fails > 0 {
		os.Exit(1)
	}
}
