// Command baseline is the benchmark's floor: a minimal net/http server that
// answers every request with the same JSON bytes and headers as a cwcreds
// cache hit (Content-Type application/json, Cache-Control no-store), with no
// routing, checks or logging. scripts/bench runs it beside the daemon.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/go-chi/chi/v5"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	bodyFile := flag.String("body-file", "", "file holding the exact response body")
	addrFile := flag.String("addr-file", "", "write the bound address here once listening")
	withChi := flag.Bool("chi", false, "route through chi (one /v1/credentials/{profile} route, no middleware) instead: the router's own cost, for comparison")
	flag.Parse()
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(2)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(ln.Addr().String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "baseline:", err)
			os.Exit(2)
		}
	}
	ct, cc := []string{"application/json"}, []string{"no-store"}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd["Content-Type"] = ct
		hd["Cache-Control"] = cc
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
	var handler http.Handler = h
	if *withChi {
		r := chi.NewRouter()
		r.Get("/v1/credentials/{profile}", h)
		handler = r
	}
	fmt.Fprintln(os.Stderr, (&http.Server{Handler: handler}).Serve(ln))
	os.Exit(1)
}
