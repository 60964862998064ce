package config

import (
	"fmt"
)

// Local is the part of the configuration that commands talking to the
// daemon running on this node (cwcreds status, cwcreds revoke) need.
type Local struct {
	// ListenAddr is the address of CWCREDS_LISTEN_ADDR (default
	// 127.0.0.1:791) commands reach the daemon at: its first loopback
	// address, else its first (see Config.LocalAddr).
	ListenAddr string
	// RuntimeDir is the daemon's runtime directory, resolved as Load does.
	RuntimeDir string
	// APIURL is CWCREDS_API_URL (default https://api.coreweave.com), for
	// commands that call the CoreWeave API themselves (cwcreds revoke
	// --token-file).
	APIURL string
}

// LoadLocal reads CWCREDS_LISTEN_ADDR, CWCREDS_API_URL and the runtime directory
// (CWCREDS_RUNTIME_DIR, $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR, /run/cwcreds)
// with the defaults Load applies, and nothing else: it needs no profile
// configuration, so it works in an operator's shell that lacks the daemon's
// environment file, and it ignores every other CWCREDS_ variable. Like
// Load, it reads environ only. On a problem it returns an *Error.
func LoadLocal(environ []string) (*Local, error) {
	e := parseEnviron(environ)
	var g globalEnv
	if err := e.decode(envPrefix, &g); err != nil {
		return nil, fmt.Errorf("config: decode environment: %w", err)
	}
	var ps problems
	l := &Local{ListenAddr: localAddr(orDefault(g.ListenAddr, defaultListenAddr)), APIURL: orDefault(g.ApiURL, defaultAPIURL)}
	if msg := checkAPIURL(l.APIURL); msg != "" {
		ps.add(varAPIURL, "%s", msg)
	}
	l.RuntimeDir, _ = runtimeDir(&ps, e, g.RuntimeDir)
	if err := ps.err(nil); err != nil {
		return nil, err
	}
	return l, nil
}
