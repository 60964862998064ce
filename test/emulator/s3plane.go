package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest/s3plane"
)

// planeControlPrefix holds the S3 plane's controls: no bucket name has an
// underscore, so no S3 request is shadowed.
const planeControlPrefix = "/_s3plane/"

// startPlane serves the S3 data plane on addr until ctx ends and returns
// its base URL.
func startPlane(ctx context.Context, emu *cwapitest.Emulator, addr, buckets string, delay time.Duration, region string,
	logf func(string, ...any)) (string, error) {
	plane := s3plane.New(s3plane.Options{
		Keys: emu, PropagationDelay: delay, Region: region,
		OnRefuse: func(r s3plane.Refusal) {
			logf("S3 plane refused %s %s signed by %q: %d %s: %s", r.Method, r.Path, r.AccessKeyID, r.Status, r.Code, r.Message)
		},
	})
	for b := range strings.SplitSeq(buckets, ",") {
		if b = strings.TrimSpace(b); b == "" {
			continue
		}
		if err := plane.CreateBucket(b); err != nil {
			return "", &usageError{fmt.Errorf("--s3-plane-buckets: %w", err)}
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("--s3-plane-listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: planeHandler(plane), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	base := "http://" + ln.Addr().String()
	logf("S3 data plane listening at %s (region %q, propagation delay %s, buckets %q)", base, region, delay, buckets)
	return base, nil
}

// planeHandler serves the plane and, under planeControlPrefix, its controls.
func planeHandler(plane *s3plane.Plane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, planeControlPrefix)
		if !ok {
			plane.ServeHTTP(w, r)
			return
		}
		reply := func(v any) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		}
		switch {
		case name == "stats" && r.Method == http.MethodGet:
			reply(plane.Stats())
		case name == "propagation-delay" && r.Method == http.MethodGet:
			reply(map[string]string{"delay": plane.PropagationDelay().String()})
		case name == "propagation-delay" && r.Method == http.MethodPut:
			var body struct{ Delay string }
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				http.Error(w, `{"error":"body must be {\"delay\":\"3s\"}"}`, http.StatusBadRequest)
				return
			}
			d, err := time.ParseDuration(body.Delay)
			if err != nil || d < 0 {
				http.Error(w, `{"error":"delay must be a Go duration such as \"3s\""}`, http.StatusBadRequest)
				return
			}
			plane.SetPropagationDelay(d)
			reply(map[string]string{"delay": plane.PropagationDelay().String()})
		default:
			http.Error(w, `{"error":"no such control"}`, http.StatusNotFound)
		}
	})
}
