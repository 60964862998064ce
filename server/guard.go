package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"
)

// guard refuses, on every route (IMDS included), requests that may come from
// a browser tricked by DNS rebinding (a Host other than a loopback IP literal
// or localhost), from a web page (Origin or any Sec-Fetch-* header present),
// or relayed by a proxy (X-Forwarded-For, Forwarded or Via present). Each
// header is refused whatever its value, even empty: no SDK, curl or
// credential helper sends any of them. In particular Sec-Fetch-Site: none (a
// URL the user typed or bookmarked) is refused too, so a browser can never
// display a key: browsers are not clients of this daemon.
//
// The checks are direct lookups of canonical keys in r.Header: no
// canonicalisation and no allocation on the hot path.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostAllowedOn(r.Host, localAddr(r), s.anyIP) {
			s.writeError(w, r, errForbiddenHost)
			return
		}
		if err := refusedHeader(r.Header); err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refusedHeader returns the refusal for the first browser or proxy header
// in h, or nil. Keys are canonical, as net/http stores them.
func refusedHeader(h http.Header) error {
	if _, ok := h["X-Forwarded-For"]; ok {
		return errForbiddenProxy
	}
	if _, ok := h["Forwarded"]; ok {
		return errForbiddenProxy
	}
	if _, ok := h["Via"]; ok {
		return errForbiddenProxy
	}
	if _, ok := h["Origin"]; ok {
		return errForbiddenBrowser
	}
	// Browsers send all four Fetch Metadata headers together; any one is
	// enough to refuse.
	for _, k := range secFetchHeaders {
		if _, ok := h[k]; ok {
			return errForbiddenBrowser
		}
	}
	return nil
}

// secFetchHeaders are the Fetch Metadata request headers, canonical keys.
// Only browsers send them (the Sec- prefix is forbidden to scripts).
var secFetchHeaders = [...]string{"Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User"}

// hostAllowed reports whether host, a request's Host (with an optional
// port, IPv6 in brackets), names this machine without DNS: "localhost" in
// any case, or a loopback IP literal (127.0.0.0/8, ::1). With anyIP every IP
// literal is allowed. IPv6 zones, unbracketed IPv6, trailing dots and every
// other name are refused.
func hostAllowed(host string, anyIP bool) bool {
	name, ok := splitHostPort(host)
	if !ok || name == "" {
		return false
	}
	if strings.EqualFold(name, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(name)
	if err != nil || addr.Zone() != "" {
		return false
	}
	if bracketed := host[0] == '['; bracketed != addr.Is6() {
		return false // "[127.0.0.1]" is not a valid Host
	}
	return anyIP || addr.Unmap().IsLoopback()
}

// podIdentityAddrs are the link-local addresses pods reach a node agent
// at, as config accepts them in CWCREDS_LISTEN_ADDR: EKS Pod Identity's
// IPv4 and IPv6 addresses and ECS's 169.254.170.2.
var podIdentityAddrs = [...]netip.Addr{
	netip.AddrFrom4([4]byte{169, 254, 170, 23}),
	netip.MustParseAddr("fd00:ec2::23"),
	netip.AddrFrom4([4]byte{169, 254, 170, 2}),
}

// localAddr is the address r's connection was made to (which listener it
// came through), or the zero Addr when net/http did not record it (a
// request built in a test).
func localAddr(r *http.Request) netip.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// hostAllowedOn is the Host guard of a connection made to local: on a
// loopback address, as hostAllowed without anyIP (localhost or a loopback
// IP literal); on a pod identity address, exactly that address as an IP
// literal, since that is what a pod's SDK sends and a DNS-rebinding page
// cannot; on any other address (CWCREDS_ALLOW_NON_LOOPBACK), that address,
// or with anyIP any IP literal. An unknown local address falls back to
// hostAllowed.
func hostAllowedOn(host string, local netip.Addr, anyIP bool) bool {
	switch {
	case !local.IsValid():
		return hostAllowed(host, anyIP)
	case local.IsLoopback():
		return hostAllowed(host, false)
	}
	if !hostAllowed(host, true) {
		return false // not an IP literal, or malformed
	}
	name, _ := splitHostPort(host)
	addr, err := netip.ParseAddr(name)
	if err != nil {
		return false // localhost
	}
	if addr.Unmap() == local {
		return true
	}
	return anyIP && !slices.Contains(podIdentityAddrs[:], local)
}

// splitHostPort splits "name", "name:port", "[v6]" or "[v6]:port". The port
// may be empty or digits; anything else is malformed.
func splitHostPort(host string) (name string, ok bool) {
	port := ""
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", false
		}
		name, port = host[1:end], host[end+1:]
		if port != "" {
			if port[0] != ':' {
				return "", false
			}
			port = port[1:]
		}
	} else {
		var found bool
		name, port, found = strings.Cut(host, ":")
		if found && strings.Contains(port, ":") {
			return "", false // unbracketed IPv6
		}
	}
	if len(port) > 5 {
		return "", false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return "", false
		}
	}
	return name, true
}

// recoverPanics turns a handler panic into a JSON 500. It logs the panic's
// type and stack but never its value, which may hold a secret.
// http.ErrAbortHandler is re-raised: it asks net/http to abort the response.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error().Str("panic_type", fmt.Sprintf("%T", v)).Bytes("stack", debug.Stack()).
				Str("method", r.Method).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).
				Msg("handler panicked")
			status, code, msg := errorStatus(errPanic)
			s.sendError(w, r, status, code, msg)
		}()
		next.ServeHTTP(w, r)
	})
}

// logRequests logs each request at debug level. When debug is off it adds
// nothing to the request path.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.debugEnabled() {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		s.log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).
			Int("status", ww.Status()).Int("bytes", ww.BytesWritten()).
			Dur("took", time.Since(start)).Msg("request")
	})
}

// debugEnabled reports, without building an event, whether debug events
// would be written.
func (s *Server) debugEnabled() bool {
	return s.log.GetLevel() <= zerolog.DebugLevel && zerolog.GlobalLevel() <= zerolog.DebugLevel
}
